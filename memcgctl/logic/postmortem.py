"""``explain-kill``: the kernel's decision rebuilt from an OOM report (pure, no I/O).

From a report's task table (:class:`~memcgctl.logic.oomreport.OomReport`) and the rules of the
kernel that wrote it (``mm/oom_kill.c`` ``oom_badness`` and ``select_bad_process``),
every candidate's points, the ranking, and a verdict: is the kernel's
victim the top of the ranking, and if not, why.  Then the counterfactual: the victim
the priority policy (:func:`~memcgctl.logic.priority.select_priority`) would have chosen on a
snapshot built from the report, with the badness the caller knows.  The kernel's scoring
is in :mod:`memcgctl.logic.oomscore`, the snapshot in :mod:`memcgctl.logic.reportsnapshot`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from memcgctl.logic.decision import KERNEL, Decision, Scored
from memcgctl.logic.oomreport import OomReport
from memcgctl.logic.oomscore import (
    KernelRules,
    is_memcg_oom,
    oom_root,
    printed_path,
    rank,
    row_points,
    rules_for,
    totalpages,
)
from memcgctl.logic.priority import select_priority
from memcgctl.logic.reportsnapshot import BadnessMap, CgroupLookup, LiveLookup, build_snapshot
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.model import Snapshot
from memcgctl.vocab.reasons import Caveat, Note, Reason


@dataclass(frozen=True)
class KillExplanation:
    report: OomReport
    rules: KernelRules
    oom_root: CgroupPath
    memcg_oom: bool
    kernel_pid: int | None  # the task the kernel chose (before any sacrifice/group)
    killed: tuple[int, ...]
    decision: Decision  # the rebuilt kernel ranking (policy kernel)
    snapshot: Snapshot
    victim_is_top: bool | None  # None: cannot tell
    verdict: str  # matches | differs | no_table | incomplete | exiting | no_victim
    why: tuple[str, ...]
    priority: Decision | None
    priority_notes: tuple[str, ...] = field(default=())
    score_check: dict[str, Any] | None = None


def _kernel_pid(report: OomReport) -> int | None:
    if report.select is not None:
        return int(report.select["pid"])
    if report.summary is not None:
        return int(report.summary["pid"])
    if report.exiting is not None:
        return int(report.exiting["pid"])
    if report.kills:
        return int(report.kills[0]["pid"])
    return None


def _task_memcg(report: OomReport) -> CgroupPath | None:
    if report.summary is not None and report.summary.get("task_memcg"):
        return printed_path(report.summary["task_memcg"])
    if report.task_in is not None:
        return printed_path(report.task_in["task_memcg"])
    return None


def _match_printed_score(report: OomReport, total: int, rules: KernelRules) -> KernelRules:
    """Without the kernel release, the root bonus of the kernel that wrote the report is
    the one that reproduces the score it printed for its victim (3.x-4.x)."""
    assert report.select is not None
    row = next((r for r in report.tasks if r.pid == report.select["pid"]), None)
    if row is None:
        return rules
    for bonus in (rules.root_bonus, "pct3", "adj30", None):
        trial = replace(rules, root_bonus=bonus)
        points, _ = row_points(row, total, trial)
        if points * 1000 // total == int(report.select["score"]):
            return replace(trial, source=rules.source + ", root bonus matched to the printed score")
    return rules


def explain_report(
    report: OomReport,
    badness: BadnessMap | None = None,
    live: LiveLookup | None = None,
    live_cgroup: CgroupLookup | None = None,
) -> KillExplanation:
    rules = rules_for(report)
    root = oom_root(report)
    kernel_pid = _kernel_pid(report)
    killed = tuple(int(k["pid"]) for k in report.kills)
    total, notes = totalpages(report)
    if total is not None and report.select is not None and rules.source != "release":
        rules = _match_printed_score(report, total, rules)
    task_memcg = _task_memcg(report)
    placement: dict[int, CgroupPath] = {}
    if kernel_pid is not None and task_memcg is not None:
        placement[kernel_pid] = task_memcg
    for k in report.kills:
        if k.get("cgroup"):
            placement.setdefault(int(k["pid"]), printed_path(k["cgroup"]))
    why: list[str] = []
    reasons: list[Reason] = [Note(n) for n in notes]
    reasons.append(
        Note(
            f"kernel rules of {rules.version[0]}.{rules.version[1]}"
            + (
                " (from the report's stack header)"
                if rules.source == "release"
                else f" or later ({rules.source}; no stack header)"
            )
            + (
                f"; root bonus {'adj -= 30' if rules.root_bonus == 'adj30' else '3%'} for uid 0"
                if rules.root_bonus
                else ""
            )
            + ("; points at least 1" if rules.clamp_to_one else "")
            + (
                "; ties go to the last scanned"
                if rules.ties_to_last
                else "; ties go to the first scanned"
            )
        )
    )
    scored: list[Scored] = []
    skipped = 0
    if total is not None and report.tasks:
        scored, skipped = rank(report, total, rules, lambda r: placement.get(r.pid, root))
        reasons.append(
            Note(
                f"{len(scored)} candidates in the report's task table, {skipped} never "
                "eligible (oom_score_adj -1000, init)"
            )
        )
    top = scored[0] if scored else None
    table_pids = {r.pid for r in report.tasks} | {r.tgid for r in report.tasks}
    verdict = "matches"
    victim_is_top: bool | None = None
    if report.exiting is not None and not killed:
        verdict = "exiting"
        why.append(
            f"pid {report.exiting['pid']} ({report.exiting['comm']}) was already an OOM victim "
            "and still exiting: the kernel killed nothing new and waited for it"
        )
    elif report.no_killable:
        verdict = "no_victim"
        why.append("the kernel found no killable process")
    if verdict in ("matches",):
        if not report.tasks:
            verdict = "no_table"
            why.append(
                "the report has no task table (rate-limited report, vm.oom_dump_tasks=0, or "
                "a truncated log): the ranking cannot be rebuilt"
            )
        elif total is None:
            verdict = "no_table"
            why.append("the report lacks the lines that give totalpages: cannot score")
        elif kernel_pid is not None and kernel_pid not in table_pids:
            verdict = "incomplete"
            why.append(
                f"the kernel's victim pid {kernel_pid} is not in the task table: the table "
                "is incomplete (truncated or interleaved lines)"
            )
        elif top is not None and kernel_pid is not None:
            hit = top.process.pid == kernel_pid or any(
                r.tgid == top.process.pid and r.pid == kernel_pid for r in report.tasks
            )
            victim_is_top = hit
            if hit:
                why.append(
                    f"the kernel's victim pid {kernel_pid} ({top.process.comm}) is the top of "
                    f"the rebuilt ranking with {top.points} points"
                )
            else:
                verdict = "differs"
                mine = next((s for s in scored if s.process.pid == kernel_pid), None)
                gap = f" ({top.points - mine.points} points fewer)" if mine is not None else ""
                why.append(
                    f"the kernel chose pid {kernel_pid}{gap}, not the top pid "
                    f"{top.process.pid} ({top.process.comm}): the table is printed from a "
                    "second look at the counters (they move; since 6.2 they are per-CPU "
                    "approximations), uid 0 stands in for CAP_SYS_ADMIN, and totalpages may be off"
                )
    if report.select is not None and killed and report.select["pid"] not in killed:
        why.append(
            f"sacrifice child: the kernel chose pid {report.select['pid']} "
            f"({report.select['comm']}) and killed its child pid {killed[0]} instead "
            "(kernels before 4.19 killed a child with its own memory first)"
        )
    if report.group is not None:
        why.append(
            f"memory.oom.group: every task of {report.group} was killed with the victim "
            f"({len(killed)} kills in this report)"
        )
    score_check = None
    if report.select is not None and top is not None and total:
        printed = int(report.select["score"])
        chosen = next((s for s in scored if s.process.pid == report.select["pid"]), top)
        mine_score = chosen.points * 1000 // total
        score_check = {"printed": printed, "rebuilt": mine_score, "agrees": printed == mine_score}
        if score_check["agrees"]:
            reasons.append(
                Note(
                    f"the kernel printed score {printed} for its victim; the rebuilt points "
                    "give the same (points × 1000 / totalpages): totalpages and rules check out"
                )
            )
        else:
            reasons.append(
                Note(
                    f"the kernel printed score {printed} for its victim; rebuilt: {mine_score} "
                    "(points × 1000 / totalpages) — totalpages or the counters differ"
                )
            )
    victim = top.process if top is not None else None
    decision = Decision(
        KERNEL,
        root,
        victim,
        group_pids=killed,
        candidates=tuple(scored),
        points=top.points if top is not None else None,
        totalpages=total,
        reasons=tuple(reasons + [Note(w) for w in why]),
        caveats=(Caveat.TABLE_MEMCG_VICTIM_ONLY, Caveat.AS_PRINTED),
    )
    snap, snap_notes = build_snapshot(
        report, root, placement, badness or BadnessMap(), live, live_cgroup
    )
    priority = select_priority(snap, root) if report.tasks else None
    return KillExplanation(
        report=report,
        rules=rules,
        oom_root=root,
        memcg_oom=is_memcg_oom(report),
        kernel_pid=kernel_pid,
        killed=killed,
        decision=decision,
        snapshot=snap,
        victim_is_top=victim_is_top,
        verdict=verdict,
        why=tuple(why),
        priority=priority,
        priority_notes=tuple(snap_notes),
        score_check=score_check,
    )
