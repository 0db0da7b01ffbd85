"""Views of a :class:`~memcgctl.logic.decision.Decision`: the JSON document, the
explanation tree (``--explain``) and the short text summary.  Pure: no I/O, no rich."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memcgctl.logic.decision import KERNEL, Candidate, Decision, Level, Scored
from memcgctl.render.eventline import gap_text, worded
from memcgctl.render.output import TreeNode
from memcgctl.render.reasontext import SKIP_TEXT, caveat_lines, reason_lines, verdict_text
from memcgctl.render.reportwords import RULES_SOURCE_TEXT, VERDICT_TEXT, note_lines
from memcgctl.render.views import badness_source_text
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.model import ProcessInfo, Snapshot
from memcgctl.vocab.units import format_bytes, format_kb

if TYPE_CHECKING:
    from memcgctl.logic.oomreport import OomReport
    from memcgctl.logic.postmortem import KillExplanation

CHOSEN = "►"


def _base(path: CgroupPath) -> str:
    return path.name


# -- JSON -----------------------------------------------------------------------------


def process_json(p: ProcessInfo, snap: Snapshot) -> dict[str, Any]:
    """A process of a decision: its own keys and the pod its cgroup belongs to."""
    doc = p.to_json()
    doc["pod"] = snap.pod_of(p.cgroup)
    return doc


def _source(p: ProcessInfo) -> str:
    return badness_source_text(p.badness_source, p.badness_from)


def candidate_json(c: Candidate, snap: Snapshot) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": c.kind, "badness": c.badness}
    if c.process is not None:
        p = c.process
        doc.update(
            {
                "pid": p.pid,
                "comm": p.comm,
                "cgroup": p.cgroup,
                "pod": snap.pod_of(p.cgroup),
                "badness_source": p.badness_source,
                "badness_from": p.badness_from,
                "rss_kb": p.rss_kb,
            }
        )
    elif c.cgroup is not None:
        doc.update(
            {
                "cgroup": c.cgroup.path,
                "pod": c.cgroup.pod,
                "badness_source": c.cgroup.badness_source,
                "usage_bytes": c.cgroup.usage_bytes,
            }
        )
    skipped = SKIP_TEXT[c.skip] if c.skip is not None else None
    doc.update({"eligible": c.skip is None, "skipped": skipped, "note": verdict_text(c.verdict)})
    return doc


def level_json(level: Level, snap: Snapshot, lazy: bool = False) -> dict[str, Any]:
    candidates = (candidate_json(c, snap) for c in level.candidates)
    return {
        "cgroup": level.cgroup,
        "pod": snap.pod_of(level.cgroup),
        "candidates": candidates if lazy else list(candidates),
        "chosen": candidate_json(level.chosen, snap) if level.chosen is not None else None,
    }


def scored_json(s: Scored, snap: Snapshot) -> dict[str, Any]:
    doc = process_json(s.process, snap)
    doc.update(
        {
            "points": s.points,
            "scan_index": s.scan_index,
            "rss_pages": s.rss_pages,
            "swap_pages": s.swap_pages,
            "pgtable_pages": s.pgtable_pages,
            "adj_pages": s.adj_pages,
        }
    )
    return doc


def decision_json(
    d: Decision,
    snap: Snapshot,
    top: int | None = None,
    lazy: bool = False,
    candidates: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The decision's document; ``lazy``: its arrays of candidates as generators, for
    :func:`memcgctl.render.jsonstream.emit_json_stream` (a report of 100,000 tasks);
    ``candidates``: predict-victim's ranked entries instead of the scored ones."""
    victim: dict[str, Any] | None = None
    if d.victim is not None:
        victim = process_json(d.victim, snap)
        if d.policy == KERNEL:
            victim["points"] = d.points
    group = snap.cgroups.get(d.kill_group) if d.kill_group is not None else None
    scored = d.candidates if top is None else d.candidates[:top]
    walk = (level_json(lv, snap, lazy) for lv in d.walk)
    ranked = (scored_json(s, snap) for s in scored)
    doc: dict[str, Any] = {
        "oom_root": d.oom_root,
        "policy": d.policy,
        "victim": victim,
        "kill_group": group.to_json() if group is not None else None,
        "group_pids": list(d.group_pids),
        "walk": walk if lazy else list(walk),
        "candidates": candidates if candidates is not None else ranked if lazy else list(ranked),
        "totalpages": d.totalpages,
        "reasons": reason_lines(d.reasons),
        "caveats": caveat_lines(d.caveats),
    }
    return doc


# -- text -----------------------------------------------------------------------------


def pod_note(pod: str | None) -> str:
    """`` (pod namespace/name)`` next to a cgroup whose pod is known, else nothing."""
    return f" (pod {pod})" if pod is not None else ""


def describe_process(p: ProcessInfo, snap: Snapshot | None = None) -> str:
    """``pid N (comm) in /cgroup``, and the cgroup's pod where ``snap`` knows it."""
    pod = snap.pod_of(p.cgroup) if snap is not None else None
    return f"pid {p.pid} ({p.comm}) in {p.cgroup}{pod_note(pod)}"


def summary_lines(d: Decision, snap: Snapshot | None = None) -> list[str]:
    if d.victim is None:
        return [f"no killable victim below {d.oom_root} (policy {d.policy})"]
    p = d.victim
    detail = (
        f"points {d.points}, oom_score_adj {p.oom_score_adj}, rss {format_kb(p.rss_kb)}"
        if d.policy == KERNEL
        else f"badness {p.badness} ({_source(p)}), rss {format_kb(p.rss_kb)}"
    )
    lines = [f"victim: {describe_process(p, snap)} — {detail}"]
    if d.kill_group is not None:
        pids = " ".join(str(x) for x in d.group_pids)
        lines.append(
            f"memory.oom.group: all of {d.kill_group} dies ({len(d.group_pids)} pids: {pids})"
        )
    return lines


# -- the explanation tree -------------------------------------------------------------


def _candidate_label(c: Candidate, chosen: bool, above: str | None) -> str:
    mark = CHOSEN if chosen else " "
    if c.process is not None:
        what = f"pid {c.process.pid} ({c.process.comm})"
        size = f"rss {format_kb(c.process.rss_kb)}"
        src = "" if c.process.badness_source == "default" else f" ({_source(c.process)})"
    else:
        assert c.cgroup is not None
        # the pod where it starts: not again on every cgroup inside it
        pod = c.cgroup.pod if c.cgroup.pod != above else None
        what = f"cgroup {_base(c.cgroup.path)}{pod_note(pod)}"
        size = f"usage {format_bytes(c.cgroup.usage_bytes)}"
        src = "" if c.cgroup.badness_source == "default" else f" ({c.cgroup.badness_source})"
    verdict = f"skipped: {SKIP_TEXT[c.skip]}" if c.skip is not None else verdict_text(c.verdict)
    return f"{mark} {what}  badness {c.badness}{src} · {size} — {verdict}"


def _level_nodes(
    walk: tuple[Level, ...], per_level: int, above: str | None
) -> tuple[TreeNode, ...]:
    """The walk's levels as nested nodes; ``above``: the pod of the first level's cgroup.

    Built from the deepest level up, without recursion: a walk is as deep as the
    hierarchy, which a user may nest thousands of levels deep."""
    aboves = [above]
    for level in walk[:-1]:
        chosen = level.chosen
        aboves.append(chosen.cgroup.pod if chosen is not None and chosen.cgroup else None)
    below: tuple[TreeNode, ...] = ()
    for i in range(len(walk) - 1, -1, -1):
        below = _one_level(walk[i], i + 1 < len(walk), below, per_level, aboves[i])
    return below


def _one_level(
    level: Level,
    has_next: bool,
    next_nodes: tuple[TreeNode, ...],
    per_level: int,
    above: str | None,
) -> tuple[TreeNode, ...]:
    """One level's candidates; the chosen cgroup carries ``next_nodes`` (the level below)."""
    nodes: list[TreeNode] = []
    eligible = [c for c in level.candidates if c.skip is None]
    skipped = [c for c in level.candidates if c.skip is not None]
    shown = eligible[:per_level]
    shown_skipped = skipped if len(skipped) <= per_level else []
    for c in shown + shown_skipped:
        is_chosen = level.chosen is not None and c is level.chosen
        children: tuple[TreeNode, ...] = ()
        style = "dim" if c.skip is not None else ""
        if is_chosen and c.cgroup is not None and has_next:
            children = next_nodes
            style = "bold"
        elif is_chosen and c.kind == "process":
            children = (TreeNode("the victim", style="bold red"),)
            style = "bold red"
        nodes.append(TreeNode(_candidate_label(c, is_chosen, above), children, style))
    hidden = len(eligible) - len(shown)
    if hidden > 0:
        nodes.append(TreeNode(f"… {hidden} more (raise --top to see them)", style="dim"))
    if skipped and not shown_skipped:
        counts: dict[str, int] = {}
        for c in skipped:
            key = f"{c.kind}: {SKIP_TEXT[c.skip] if c.skip is not None else None}"
            counts[key] = counts.get(key, 0) + 1
        summary = "; ".join(f"{n}× {k}" for k, n in sorted(counts.items()))
        nodes.append(TreeNode(f"  {len(skipped)} skipped — {summary}", style="dim"))
    if not level.candidates:
        nodes.append(TreeNode("no candidates: no child cgroups and no processes", style="dim"))
    return tuple(nodes)


def explain_tree(d: Decision, snap: Snapshot, per_level: int = 5) -> TreeNode:
    """The walk drawn as a tree: each level's candidates, the chosen one marked ►
    with the next level below it, the others with the reason they lost; a cgroup
    where a Kubernetes pod starts (``memcgctl kube``'s label) names the pod."""
    if d.policy == KERNEL:
        return _kernel_tree(d, snap, per_level)
    root_pod = snap.pod_of(d.oom_root)
    title = (
        f"OOM root {d.oom_root}{pod_note(root_pod)} — policy priority: at each level the "
        "lowest badness is killed first (cgroups before processes on a tie; 1000 = never)"
    )
    children = _level_nodes(d.walk, per_level, root_pod) if d.walk else ()
    return TreeNode(title, children, "bold")


def _kernel_tree(d: Decision, snap: Snapshot, per_level: int) -> TreeNode:
    scope = "host OOM" if d.oom_root == "/" else "memcg OOM"
    per_adj = (d.totalpages or 0) // 1000
    title = (
        f"OOM root {d.oom_root} — policy kernel ({scope}): most points die; points = "
        f"rss + swap + page-table pages + oom_score_adj × {per_adj} "
        f"(totalpages {d.totalpages} / 1000)"
    )
    if d.normalised:
        title = (
            f"OOM root {d.oom_root} — policy kernel ({scope}, before 3.8): most points die; "
            f"points = (rss + swap + page-table pages) × 1000 / totalpages {d.totalpages} "
            "+ oom_score_adj, 1 to 1000"
        )
    nodes: list[TreeNode] = []
    top = d.candidates[0] if d.candidates else None
    for i, s in enumerate(d.candidates[:per_level]):
        p = s.process
        formula = (
            f"{s.points} = {s.rss_pages} rss + {s.swap_pages} swap + {s.pgtable_pages} pt"
            f" {'+' if s.adj_pages >= 0 else '−'} {abs(s.adj_pages)} adj({p.oom_score_adj})"
        )
        if d.normalised:
            formula = (
                f"{s.points} = ({s.rss_pages} rss + {s.swap_pages} swap + {s.pgtable_pages} pt)"
                f" scaled {'+' if s.adj_pages >= 0 else '−'} {abs(s.adj_pages)}"
            )
        if i == 0:
            verdict = "chosen: the most points"
            if len(d.candidates) > 1 and d.candidates[1].points == s.points:
                last = s.scan_index > d.candidates[1].scan_index
                verdict += f" (tie: scanned {'last' if last else 'first'})"
            label = f"{CHOSEN} {describe_process(p, snap)}  points {formula} — {verdict}"
            nodes.append(TreeNode(label, (TreeNode("the victim", style="bold red"),), "bold red"))
        else:
            assert top is not None
            gap = top.points - s.points
            order = "before" if s.scan_index < top.scan_index else "after"
            verdict = (
                f"{gap} points fewer" if gap else f"same points, but scanned {order} the victim"
            )
            nodes.append(TreeNode(f"  {describe_process(p, snap)}  points {formula} — {verdict}"))
    hidden = len(d.candidates) - per_level
    if hidden > 0:
        nodes.append(TreeNode(f"… {hidden} more (raise --top to see them)", style="dim"))
    if not d.candidates:
        nodes.append(TreeNode("no eligible process", style="dim"))
    return TreeNode(title, tuple(nodes), "bold")


def footer_lines(d: Decision) -> list[str]:
    """The decision in sentences, then where it may be wrong."""
    lines = ["", "Why:"]
    lines += [f"  {i}. {r}" for i, r in enumerate(reason_lines(d.reasons), 1)]
    if d.caveats:
        lines += ["", "Where userspace cannot be exact:"]
        lines += [f"  - {c}" for c in caveat_lines(d.caveats)]
    return lines


# -- explain-kill (a kill rebuilt from a saved report) -----------------------------------


def report_json(r: OomReport) -> dict[str, Any]:
    """What one saved OOM report said, in brief (``explain-kill --json``'s ``report``)."""
    return {
        "line": r.first_line,
        "time": r.time,
        "uptime_s": r.uptime_s,
        "log_time": r.log_time or None,
        "kernel_release": r.release,
        "invoked_by": (r.invoked or {}).get("comm"),
        "memcg_counters": r.memcg,
        "ram_pages": r.ram_pages,
        "reserved_pages": r.reserved_pages,
        "swap_total_kb": r.swap_total_kb,
        "table_layout": r.layout,
        "tasks": len(r.tasks),
        "kills": [k.get("pid") for k in r.kills],
    }


def kill_explanation_json(x: KillExplanation, lazy: bool = False) -> dict[str, Any]:
    """``explain-kill --json``: the report, the rebuilt kernel ranking (the
    ``predict-victim --policy kernel`` shape), the verdict and the priority policy's
    choice (the ``predict-victim`` shape), or null without a task table.  ``lazy``: the
    arrays of candidates as generators (:func:`decision_json`)."""
    kernel = decision_json(x.decision, x.snapshot, lazy=lazy)
    kernel["group_pids"] = list(x.killed)
    return {
        "report": report_json(x.report),
        "kills": [worded(k) for k in x.report.kills],
        "oom_root": x.oom_root,
        "memcg_oom": x.memcg_oom,
        "kernel_rules": {
            "version": f"{x.rules.version[0]}.{x.rules.version[1]}",
            "source": RULES_SOURCE_TEXT[x.rules.source],
            "root_bonus": x.rules.root_bonus,
            "clamp_to_one": x.rules.clamp_to_one,
            "ties_to_last": x.rules.ties_to_last,
        },
        "kernel_victim_pid": x.kernel_pid,
        "killed_pids": list(x.killed),
        "kernel": kernel,
        "verdict": x.verdict.value,
        "victim_is_top": x.victim_is_top,
        "why": note_lines(x.why),
        "score_check": x.score_check,
        "priority": (
            decision_json(x.priority, x.snapshot, lazy=lazy) if x.priority is not None else None
        ),
        "priority_notes": note_lines(x.priority_notes),
    }


def _pod_of_pid(x: KillExplanation, pid: int | None) -> str:
    """`` (pod namespace/name)`` of a killed task, where its cgroup's pod is known."""
    p = x.snapshot.processes.get(pid) if pid is not None else None
    return pod_note(x.snapshot.pod_of(p.cgroup)) if p is not None else ""


def kill_summary_lines(x: KillExplanation) -> list[str]:
    r = x.report
    when = r.time or r.log_time or (f"[{r.uptime_s:.6f}]" if r.uptime_s is not None else "?")
    if x.oom_root != "/":
        scope = f"memcg OOM of {x.oom_root}{pod_note(x.snapshot.pod_of(x.oom_root))}"
    elif x.memcg_oom:
        scope = "memcg OOM (the log does not name the memcg)"
    else:
        scope = "host OOM"
    kills = ", ".join(
        f"pid {k.get('pid')} ({k.get('comm')}){_pod_of_pid(x, k.get('pid'))}" for k in r.kills
    )
    if not kills and r.summary is not None:
        kills = (
            f"pid {r.summary['pid']} ({r.summary['comm']}), per the summary line "
            "(the log ends before the kill line)"
        )
    lines = [
        f"OOM report at line {r.first_line} ({when}): {scope}; kernel "
        f"{r.release or 'release unknown'}; killed: {kills or 'nobody'}",
    ]
    gaps: list[str] = []
    for k in r.kills:
        gaps += [g for g in (gap_text(n, k) for n in k.get("notes", [])) if g not in gaps]
    lines += [f"  the log: {g}" for g in gaps]  # what it left unsaid: not guessed
    lines.append(f"verdict: {VERDICT_TEXT[x.verdict]}")
    lines += [f"  - {w}" for w in note_lines(x.why)]
    return lines


def priority_lines(x: KillExplanation) -> list[str]:
    d = x.priority
    if d is None:
        return ["priority policy: no task table, no counterfactual"]
    if d.victim is None:
        return [f"priority policy: no killable victim below {d.oom_root}"]
    p = d.victim
    same = p.pid in x.killed
    lines = [
        f"priority policy would have killed: {describe_process(p, x.snapshot)} — "
        f"badness {p.badness} "
        f"({_source(p)})" + (" — the same task" if same else ""),
    ]
    lines += [f"  - {n}" for n in note_lines(x.priority_notes)]
    return lines
