"""predict-victim's JSON document: one shape for both policies."""

from __future__ import annotations

from typing import Any

from memcgctl.logic.decision import KERNEL, Decision
from memcgctl.render.explain import decision_json, process_json, scored_json
from memcgctl.vocab.model import Snapshot


def _candidate_entry(
    rank: int, process: dict[str, Any], points: int | None, group: str | None, pids: list[int]
) -> dict[str, Any]:
    return {**process, "rank": rank, "points": points, "kill_group": group, "group_pids": pids}


def predict_json(
    decision: Decision, snap: Snapshot, top: int | None, ranked: list[Decision]
) -> dict[str, Any]:
    """The one predict-victim document, with the same keys for both policies:
    ``candidates`` ranked, the victim first (kernel: every eligible process, or
    the first ``--top``; priority: the first ``--top`` in line, the victim alone
    without it) with ``rank, points (kernel; null for priority), kill_group,
    group_pids``; and with ``--top``, ``runners_up``: the same first N as
    ``{victim, kill_group, group_pids}``."""
    if decision.policy == KERNEL:
        scored = decision.candidates if top is None else decision.candidates[:top]
        cands = [
            _candidate_entry(
                i,
                c,
                c["points"],
                decision.kill_group if i == 1 else None,
                list(decision.group_pids) if i == 1 else [c["pid"]],
            )
            for i, c in enumerate((scored_json(s, snap) for s in scored), 1)
        ]
    else:
        line = ranked or ([decision] if decision.victim is not None else [])
        cands = [
            _candidate_entry(
                i, process_json(d.victim, snap), None, d.kill_group, list(d.group_pids)
            )
            for i, d in enumerate(line, 1)
            if d.victim is not None
        ]
    doc = decision_json(decision, snap, top, candidates=cands)
    if top is not None:
        doc["runners_up"] = [
            {
                "victim": {
                    k: v for k, v in c.items() if k not in ("rank", "kill_group", "group_pids")
                },
                "kill_group": c["kill_group"],
                "group_pids": c["group_pids"],
            }
            for c in cands[:top]
        ]
    return doc
