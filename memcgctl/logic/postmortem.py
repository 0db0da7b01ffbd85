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
    OOM_SCORE_ADJ_MIN,
    KernelRules,
    is_memcg_oom,
    memcg_swap_unknown,
    oom_root,
    printed_path,
    printed_score,
    rank,
    rules_for,
    totalpages,
    totalpages_from_score,
)
from memcgctl.logic.oomtable import TaskRow
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
    if report.summary is not None and report.summary.get("pid") is not None:
        return int(report.summary["pid"])
    if report.exiting is not None:
        return int(report.exiting["pid"])
    if report.kills and report.kills[0].get("pid") is not None:
        return int(report.kills[0]["pid"])
    return None


def _task_memcg(report: OomReport) -> CgroupPath | None:
    if report.summary is not None and report.summary.get("task_memcg"):
        return printed_path(report.summary["task_memcg"])
    if report.task_in is not None:
        return printed_path(report.task_in["task_memcg"])
    return None


def _total_does_not_matter(report: OomReport, rules: KernelRules) -> tuple[int | None, list[str]]:
    """Without totalpages the ranking still stands where no candidate has an
    oom_score_adj (nor the adj -= 30 root bonus): points are rss + swap + page tables."""
    rows = [r for r in report.tasks if r.oom_score_adj != OOM_SCORE_ADJ_MIN and r.pid != 1]
    if not rows or any(r.oom_score_adj for r in rows):
        return None, []
    if rules.root_bonus == "adj30" and any(r.uid == 0 for r in rows):
        return None, []
    return 1000, [
        "totalpages unknown, but no candidate has an oom_score_adj: the ranking is by rss + "
        "swap + page tables alone (points shown with totalpages taken as 1000)"
    ]


def _victim_row(report: OomReport, pid: int | None) -> TaskRow | None:
    if pid is None:
        return None
    return next((r for r in report.tasks if r.pid == pid), None)


def _weigh_printed_score(
    report: OomReport, total: int | None, rules: KernelRules, kernel_pid: int | None
) -> tuple[int | None, KernelRules, list[str]]:
    """What the victim's printed score (``Kill process N (comm) score S``, 3.x-4.18)
    proves: whether it had the root bonus (uid 0 with or without CAP_SYS_ADMIN: a
    container drops it), and totalpages where the report does not give it.  Every
    inference is said in the notes."""
    notes: list[str] = []
    row = _victim_row(report, kernel_pid)
    if report.select is None or row is None:
        return total, rules, notes
    printed = int(report.select["score"])
    bonus_open = row.uid == 0 and rules.root_bonus is not None
    trials = [rules, replace(rules, root_bonus=None)] if bonus_open else [rules]
    if total is not None:
        hits = [r for r in trials if printed_score(row, total, r) == printed]
        if bonus_open and len(hits) == 1:
            if hits[0].root_bonus is None:
                rules = hits[0]
                notes.append(
                    f"the kernel printed score {printed} for pid {row.pid} (uid 0): that is "
                    "its points WITHOUT the root bonus, so it lacked CAP_SYS_ADMIN (a "
                    "container drops it); the other uid-0 tasks are scored the same way "
                    "(the log does not show each task's capabilities)"
                )
            else:
                notes.append(
                    f"the kernel printed score {printed} for pid {row.pid} (uid 0): that is "
                    "its points with the root bonus (CAP_SYS_ADMIN); uid-0 tasks get it"
                )
        if hits or not memcg_swap_unknown(report):
            return total, rules, notes
        floor = total  # the memcg limit: the host's swap comes on top
    else:
        floor = 1
    for trial in trials:
        found = totalpages_from_score(row, printed, trial, floor)
        if found is None:
            continue
        least, most = found
        what = "the host's swap is not in the report" if floor > 1 else "the report lacks them"
        notes.append(
            f"totalpages from the kernel's printed score {printed} for pid {row.pid} "
            f"({what}): {least}"
            + (f" to {most}" if most != least else "")
            + f" pages; {least} is used"
            + (f" ({least - floor} pages of swap on top of the limit)" if floor > 1 else "")
        )
        if bonus_open:
            notes.append(
                "uid 0 and totalpages are both unknown: the root bonus "
                + ("is assumed" if trial.root_bonus else "is assumed absent")
                + " (the first that fits the printed score); the other reading may fit too"
            )
        return least, trial, notes
    return total, rules, notes


def explain_report(
    report: OomReport,
    badness: BadnessMap | None = None,
    live: LiveLookup | None = None,
    live_cgroup: CgroupLookup | None = None,
) -> KillExplanation:
    rules = rules_for(report)
    root = oom_root(report)
    kernel_pid = _kernel_pid(report)
    killed = tuple(int(k["pid"]) for k in report.kills if k.get("pid") is not None)
    chosen_pid = kernel_pid  # the kernel's choice as a row of the table
    thread_note: str | None = None
    table_pids = {r.pid for r in report.tasks} | {r.tgid for r in report.tasks}
    if kernel_pid is not None and kernel_pid not in table_pids and report.select is not None:
        same = [r.pid for r in report.tasks if r.pid in killed and r.name == report.select["comm"]]
        if len(same) == 1:
            chosen_pid = same[0]
            thread_note = (
                f"the kernel chose pid {kernel_pid} ({report.select['comm']}), which is no row "
                f"of the task table (its rows are processes), and killed pid {chosen_pid} of "
                f"the same name: pid {kernel_pid} is taken as a thread of {chosen_pid} (the "
                "log cannot tell a thread from a child of the same name)"
            )
    total, notes = totalpages(report)
    total, rules, score_notes = _weigh_printed_score(report, total, rules, chosen_pid)
    if score_notes and total is not None:
        notes = [n for n in notes if "totalpages unknown" not in n and "unknown:" not in n]
    notes += score_notes
    if total is None and report.tasks:
        total, extra = _total_does_not_matter(report, rules)
        notes += extra
    if report.columns_inferred:
        notes.append(
            "the log begins inside the task table (no header): its columns are read from "
            f"the rows ({' '.join(report.columns or [])})"
        )
    task_memcg = _task_memcg(report)
    placement: dict[int, CgroupPath] = {}
    if chosen_pid is not None and task_memcg is not None:
        placement[chosen_pid] = task_memcg
    for k in report.kills:
        if k.get("cgroup") and k.get("pid") is not None:
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
                + (
                    " (assumed: a kernel from 4.17 on has none, and the report cannot say)"
                    if rules.source != "release" and rules.root_bonus == "pct3"
                    else ""
                )
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
        if not report.tasks and report.table_cut:
            verdict = "no_table"
            why.append(
                "the report's task table is cut short (its header ends before the name "
                "column: an ellipsized or truncated log): the ranking cannot be rebuilt"
            )
        elif not report.tasks:
            verdict = "no_table"
            why.append(
                "the report has no task table this reader can read (rate-limited report, "
                "vm.oom_dump_tasks=0, or a truncated log): the ranking cannot be rebuilt"
            )
        elif total is None:
            verdict = "no_table"
            why.append("the report lacks the lines that give totalpages: cannot score")
        elif chosen_pid is not None and chosen_pid not in table_pids:
            verdict = "incomplete"
            why.append(
                f"the kernel's victim pid {kernel_pid} is not in the task table: the table "
                "is incomplete (truncated or interleaved lines)"
            )
        elif top is not None and chosen_pid is not None:
            if thread_note is not None:
                why.append(thread_note)
            hit = top.process.pid == chosen_pid or any(
                r.tgid == top.process.pid and r.pid == chosen_pid for r in report.tasks
            )
            victim_is_top = hit
            if report.columns_inferred:
                why.append(
                    f"the log holds {len(report.tasks)} rows of the task table and no header: "
                    "the ranking is among those rows only"
                )
            if hit:
                why.append(
                    f"the kernel's victim pid {kernel_pid} ({top.process.comm}) is the top of "
                    f"the rebuilt ranking with {top.points} points"
                )
            else:
                verdict = "differs"
                mine = next((s for s in scored if s.process.pid == chosen_pid), None)
                gap = f" ({top.points - mine.points} points fewer)" if mine is not None else ""
                why.append(
                    f"the kernel chose pid {kernel_pid}{gap}, not the top pid "
                    f"{top.process.pid} ({top.process.comm}): the table is printed from a "
                    "second look at the counters (they move; since 6.2 they are per-CPU "
                    "approximations), uid 0 stands in for CAP_SYS_ADMIN, and totalpages may be off"
                )
    if (
        report.select is not None
        and killed
        and report.select["pid"] not in killed
        and thread_note is None
    ):
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
        chosen = next((s for s in scored if s.process.pid == chosen_pid), top)
        mine_score = chosen.points if rules.normalised else chosen.points * 1000 // total
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
        normalised=rules.normalised,
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
