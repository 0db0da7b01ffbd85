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

from typing import Any

from memcgctl.logic.decision import KERNEL, Decision, Scored
from memcgctl.logic.oombadness import ADJ30, KernelRules, may_be_chosen
from memcgctl.logic.oombadness import printed_score as kernel_printed_score
from memcgctl.logic.oomreport import OomReport
from memcgctl.logic.oomscore import (
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
from memcgctl.vocab.reasons import Caveat, Reason
from memcgctl.vocab.reportnotes import KillVerdict, ReportNote, Said, note
from memcgctl.vocab.structs import dataclass, field, replace


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
    verdict: KillVerdict
    why: tuple[ReportNote, ...]
    priority: Decision | None
    priority_notes: tuple[ReportNote, ...] = field(default=())
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


def _total_does_not_matter(
    report: OomReport, rules: KernelRules
) -> tuple[int | None, list[ReportNote]]:
    """Without totalpages the ranking still stands where no candidate has an
    oom_score_adj (nor the adj -= 30 root bonus): points are rss + swap + page tables."""
    rows = [r for r in report.tasks if may_be_chosen(r.pid, r.oom_score_adj)]
    if not rows or any(r.oom_score_adj for r in rows):
        return None, []
    if rules.root_bonus == ADJ30 and any(r.uid == 0 for r in rows):
        return None, []
    return 1000, [note(Said.TOTAL_DOES_NOT_MATTER)]


def _victim_row(report: OomReport, pid: int | None) -> TaskRow | None:
    if pid is None:
        return None
    return next((r for r in report.tasks if r.pid == pid), None)


def _weigh_printed_score(
    report: OomReport, total: int | None, rules: KernelRules, kernel_pid: int | None
) -> tuple[int | None, KernelRules, list[ReportNote]]:
    """What the victim's printed score (``Kill process N (comm) score S``, 3.x-4.18)
    proves: whether it had the root bonus (uid 0 with or without CAP_SYS_ADMIN: a
    container drops it), and totalpages where the report does not give it.  Every
    inference is said in the notes."""
    notes: list[ReportNote] = []
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
                notes.append(note(Said.SCORE_WITHOUT_BONUS, printed=printed, pid=row.pid))
            else:
                notes.append(note(Said.SCORE_WITH_BONUS, printed=printed, pid=row.pid))
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
        notes.append(
            note(
                Said.TOTAL_FROM_SCORE,
                printed=printed,
                pid=row.pid,
                swap_missing=floor > 1,
                least=least,
                most=most,
                floor=floor,
            )
        )
        if bonus_open:
            notes.append(note(Said.BONUS_GUESSED, assumed=trial.root_bonus is not None))
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
    thread_note: ReportNote | None = None
    table_pids = {r.pid for r in report.tasks} | {r.tgid for r in report.tasks}
    if kernel_pid is not None and kernel_pid not in table_pids and report.select is not None:
        same = [r.pid for r in report.tasks if r.pid in killed and r.name == report.select["comm"]]
        if len(same) == 1:
            chosen_pid = same[0]
            thread_note = note(
                Said.THREAD_OF, kernel_pid=kernel_pid, comm=report.select["comm"], pid=chosen_pid
            )
    total, notes = totalpages(report)
    total, rules, score_notes = _weigh_printed_score(report, total, rules, chosen_pid)
    if score_notes and total is not None:  # the score gave what the lines did not
        notes = [n for n in notes if n.said not in (Said.NO_MEMORY_LINE, Said.NO_RAM_LINE)]
    notes += score_notes
    if total is None and report.tasks:
        total, extra = _total_does_not_matter(report, rules)
        notes += extra
    if report.columns_inferred:
        notes.append(note(Said.COLUMNS_INFERRED, columns=tuple(report.columns or [])))
    task_memcg = _task_memcg(report)
    placement: dict[int, CgroupPath] = {}
    if chosen_pid is not None and task_memcg is not None:
        placement[chosen_pid] = task_memcg
    for k in report.kills:
        if k.get("cgroup") and k.get("pid") is not None:
            placement.setdefault(int(k["pid"]), printed_path(k["cgroup"]))
    why: list[ReportNote] = []
    reasons: list[Reason] = list(notes)
    reasons.append(
        note(
            Said.RULES,
            version=rules.version,
            from_release=rules.source == "release",
            source=rules.source,
            root_bonus=rules.root_bonus,
            clamp_to_one=rules.clamp_to_one,
            ties_to_last=rules.ties_to_last,
        )
    )
    scored: list[Scored] = []
    skipped = 0
    if total is not None and report.tasks:
        scored, skipped = rank(report, total, rules, lambda r: placement.get(r.pid, root))
        reasons.append(note(Said.CANDIDATES, scored=len(scored), skipped=skipped))
    top = scored[0] if scored else None
    verdict = KillVerdict.MATCHES
    victim_is_top: bool | None = None
    if report.exiting is not None and not killed:
        verdict = KillVerdict.EXITING
        why.append(note(Said.EXITING, pid=report.exiting["pid"], comm=report.exiting["comm"]))
    elif report.no_killable:
        verdict = KillVerdict.NO_VICTIM
        why.append(note(Said.NO_KILLABLE))
    if verdict == KillVerdict.MATCHES:
        if not report.tasks and report.table_cut:
            verdict = KillVerdict.NO_TABLE
            why.append(note(Said.TABLE_CUT))
        elif not report.tasks:
            verdict = KillVerdict.NO_TABLE
            why.append(note(Said.NO_TABLE))
        elif total is None:
            verdict = KillVerdict.NO_TABLE
            why.append(note(Said.NO_TOTALPAGES))
        elif chosen_pid is not None and chosen_pid not in table_pids:
            verdict = KillVerdict.INCOMPLETE
            why.append(note(Said.NOT_IN_TABLE, pid=kernel_pid))
        elif top is not None and chosen_pid is not None:
            if thread_note is not None:
                why.append(thread_note)
            hit = top.process.pid == chosen_pid or any(
                r.tgid == top.process.pid and r.pid == chosen_pid for r in report.tasks
            )
            victim_is_top = hit
            if report.columns_inferred:
                why.append(note(Said.ROWS_ONLY, rows=len(report.tasks)))
            if hit:
                why.append(note(Said.TOP, pid=kernel_pid, comm=top.process.comm, points=top.points))
            else:
                verdict = KillVerdict.DIFFERS
                mine = next((s for s in scored if s.process.pid == chosen_pid), None)
                why.append(
                    note(
                        Said.NOT_TOP,
                        pid=kernel_pid,
                        gap=top.points - mine.points if mine is not None else None,
                        top_pid=top.process.pid,
                        top_comm=top.process.comm,
                    )
                )
    if (
        report.select is not None
        and killed
        and report.select["pid"] not in killed
        and thread_note is None
    ):
        why.append(
            note(
                Said.SACRIFICE,
                pid=report.select["pid"],
                comm=report.select["comm"],
                child=killed[0],
            )
        )
    if report.group is not None:
        why.append(note(Said.OOM_GROUP, group=report.group, kills=len(killed)))
    score_check = None
    if report.select is not None and top is not None and total:
        printed = int(report.select["score"])
        chosen = next((s for s in scored if s.process.pid == chosen_pid), top)
        mine_score = kernel_printed_score(chosen.points, total, rules)
        score_check = {"printed": printed, "rebuilt": mine_score, "agrees": printed == mine_score}
        if score_check["agrees"]:
            reasons.append(note(Said.SCORE_AGREES, printed=printed))
        else:
            reasons.append(note(Said.SCORE_DIFFERS, printed=printed, rebuilt=mine_score))
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
        reasons=(*reasons, *why),
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
