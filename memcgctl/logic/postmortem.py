"""``explain-kill``: the kernel's decision rebuilt from an OOM report (pure, no I/O).

From a report's task table (:class:`~memcgctl.logic.oomreport.OomReport`) and the rules of the
kernel that wrote it (``mm/oom_kill.c`` ``oom_badness`` and ``select_bad_process``),
every candidate's points, the ranking, and a verdict: is the kernel's
victim the top of the ranking, and if not, why.  Then the counterfactual: the victim
the priority policy (:func:`~memcgctl.logic.priority.select_priority`) would have chosen on a
snapshot built from the report, with the badness the caller knows.

Kernel rules by version (the release from the stack dump header; else the least the
report's layout proves):

* points = rss + swap entries + page tables (3.x ``nr_ptes``, 4.x ``+ nr_pmds``, 4.15+
  ``pgtables_bytes`` / page size) + ``oom_score_adj * (totalpages / 1000)``;
* root bonus (CAP_SYS_ADMIN, approximated by uid 0): before 3.14 ``adj -= 30``,
  3.14-4.16 ``points -= points * 3 / 100``; gone in 4.17;
* an eligible task scores at least 1 before 5.9;
* ties: the first scanned wins before 5.3, the last one since (``oom_evaluate_task``
  passes a task over only when its points are strictly lower);
* ``oom_score_adj == -1000`` is never chosen; the table's order is the scan order.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from memcgctl.logic.decision import KERNEL, Decision, Scored
from memcgctl.logic.oomreport import OomReport, TaskRow
from memcgctl.logic.priority import select_priority
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.model import BADNESS_DEFAULT, BADNESS_NEVER, CgroupInfo, ProcessInfo, Snapshot
from memcgctl.vocab.reasons import Caveat, Note, Reason

PAGE_KB = 4
UNLIMITED_KB = 1 << 50  # v1 prints "limit 9007199254740988kB" for no limit
OOM_SCORE_ADJ_MIN = -1000

Version = tuple[int, int]


@dataclass(frozen=True)
class KernelRules:
    version: Version
    source: str  # "release" (from the report), or how it was inferred
    root_bonus: str | None  # "adj30" | "pct3" | None
    clamp_to_one: bool
    ties_to_last: bool


def parse_release(release: str | None) -> Version | None:
    if not release:
        return None
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def rules_for(report: OomReport) -> KernelRules:
    v = parse_release(report.release)
    source = "release"
    if v is None:
        source = "inferred from the report's layout"
        v = (3, 0)
        layout = report.layout
        kill = report.kills[0] if report.kills else None
        if layout == "nr_pmds":
            v = (4, 1)
        elif layout == "pgtables_bytes":
            v = (4, 19)
        if report.summary is not None:
            v = max(v, (5, 0))
        if kill is not None and kill.get("oom_score_adj") is not None:
            v = max(v, (5, 4))
        if layout == "rss_anon":
            v = max(v, (6, 8))
    bonus = "adj30" if v < (3, 14) else "pct3" if v < (4, 17) else None
    return KernelRules(v, source, bonus, v < (5, 9), v >= (5, 3))


# -- totalpages ----------------------------------------------------------------------


def _path(text: object) -> CgroupPath:
    """A cgroup path the report printed (the root if it is none: the log is text)."""
    return CgroupPath.parse(str(text)) or ROOT


def oom_root(report: OomReport) -> CgroupPath:
    """The OOM domain: the memcg that hit its limit, or ``/`` for a host OOM."""
    s = report.summary
    if s is not None:
        if s.get("global_oom"):
            return ROOT
        if s.get("oom_memcg"):
            return _path(s["oom_memcg"])
    if report.task_in is not None:
        return _path(report.task_in["oom_memcg"])
    for k in report.kills:
        if k.get("oom_memcg"):
            return _path(k["oom_memcg"])
    return ROOT


def is_memcg_oom(report: OomReport) -> bool:
    if oom_root(report) != "/":
        return True
    msg = next((k.get("message") for k in report.kills if k.get("message")), None)
    if msg is None and report.select is not None:
        msg = report.select.get("message")
    return msg == "Memory cgroup out of memory" or (
        report.summary is not None and report.summary.get("constraint") == "CONSTRAINT_MEMCG"
    )


def totalpages(report: OomReport) -> tuple[int | None, list[str]]:
    """(totalpages or None if the report does not say, notes on how it was found)."""
    notes: list[str] = []
    swap_total = report.swap_total_kb // PAGE_KB if report.swap_total_kb is not None else None
    if is_memcg_oom(report):
        mem = report.memcg.get("memory")
        if mem is None:
            return None, ["the report has no 'memory: usage …, limit …' line: totalpages unknown"]
        pages = mem["limit_kb"] // PAGE_KB
        swap_line = report.memcg.get("swap")
        memsw = report.memcg.get("memory+swap")
        allowed: int | None = None
        if swap_line is not None:
            allowed = swap_line["limit_kb"] // PAGE_KB
        elif memsw is not None:
            allowed = max(memsw["limit_kb"] - mem["limit_kb"], 0) // PAGE_KB
        if allowed:
            if swap_total is not None:
                pages += min(allowed, swap_total)
            elif allowed < UNLIMITED_KB // PAGE_KB:
                pages += allowed
                notes.append(
                    "the memcg may use swap but the report does not show the host's swap "
                    "size: its allowed swap is counted in full"
                )
            else:
                notes.append(
                    "the memcg's swap is unlimited and the report does not show the "
                    "host's swap size: totalpages counts no swap (if swap was in use, "
                    "each oom_score_adj point was worth more)"
                )
        notes.append(
            f"memcg OOM: totalpages = limit {mem['limit_kb']}kB"
            + (" + allowed swap" if pages != mem["limit_kb"] // PAGE_KB else "")
            + f" = {pages or 1} pages (4 KiB pages assumed)"
        )
        return pages or 1, notes
    if report.ram_pages is None:
        return None, ["host OOM without a 'N pages RAM' line: totalpages unknown"]
    ram = report.ram_pages - (report.reserved_pages or 0)
    pages = ram + (swap_total or 0)
    notes.append(
        f"host OOM: totalpages = {report.ram_pages} pages RAM - "
        f"{report.reserved_pages or 0} reserved + {swap_total or 0} swap pages = {pages} "
        "(the kernel counts managed pages; RAM minus reserved is their estimate)"
    )
    if swap_total is None:
        notes.append("the report shows no 'Total swap' line: no swap counted")
    return pages or 1, notes


# -- scoring -------------------------------------------------------------------------


def row_points(row: TaskRow, total: int, rules: KernelRules) -> tuple[int, int]:
    """(points, the part of them that is not rss + swap + page tables)."""
    base = row.rss + row.swapents + row.pgtable_pages
    points = base
    adj = row.oom_score_adj
    if rules.root_bonus == "adj30" and row.uid == 0:
        adj -= 30
    elif rules.root_bonus == "pct3" and row.uid == 0:
        points -= points * 3 // 100
    points += adj * (total // 1000)
    if rules.clamp_to_one and points <= 0:
        points = 1
    return points, points - base


def row_process(
    row: TaskRow, cgroup: CgroupPath, badness: int = BADNESS_DEFAULT, source: str = "default"
) -> ProcessInfo:
    anon = row.rss_anon if row.rss_anon is not None else row.rss
    return ProcessInfo(
        row.pid,
        row.name,
        cgroup,
        row.uid,
        anon * PAGE_KB,
        (row.rss_file or 0) * PAGE_KB,
        (row.rss_shmem or 0) * PAGE_KB,
        row.swapents * PAGE_KB,
        row.pgtable_pages * PAGE_KB,
        row.oom_score_adj,
        badness,
        source,
        row.pid != 1,
    )


def rank(
    report: OomReport, total: int, rules: KernelRules, cgroup_of: Callable[[TaskRow], CgroupPath]
) -> tuple[list[Scored], int]:
    """Eligible rows, the kernel's choice first; and how many were never eligible."""
    scored: list[Scored] = []
    skipped = 0
    seen_tgid: set[int] = set()
    for row in report.tasks:
        if row.tgid in seen_tgid:  # 4.19 listed threads: one mm, one candidate
            continue
        seen_tgid.add(row.tgid)
        if row.oom_score_adj == OOM_SCORE_ADJ_MIN or row.pid == 1:
            skipped += 1
            continue
        points, extra = row_points(row, total, rules)
        p = row_process(row, cgroup_of(row))
        scored.append(Scored(p, points, row.index, row.rss, row.swapents, row.pgtable_pages, extra))
    if rules.ties_to_last:
        scored.sort(key=lambda s: (-s.points, -s.scan_index))
    else:
        scored.sort(key=lambda s: (-s.points, s.scan_index))
    return scored, skipped


# -- the badness the caller knows ------------------------------------------------------


class BadnessMap:
    """``--badness FILE``: one ``PATTERN BADNESS`` a line (``#`` comments).  A pattern
    starting with ``/`` is a cgroup path (shell wildcards allowed), anything else a
    process name (comm) pattern; the first match wins."""

    def __init__(self, entries: list[tuple[str, int]] | None = None) -> None:
        self.entries = entries or []

    @classmethod
    def parse(cls, text: str, name: str = "badness file") -> BadnessMap:
        from memcgctl.vocab.errors import UsageProblem

        entries: list[tuple[str, int]] = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            pattern, _, value = line.rpartition(" ")
            pattern = pattern.strip()
            if not pattern or not value.isascii() or not value.isdigit() or int(value) > 1000:
                raise UsageProblem(
                    f"{name}:{n}: want 'PATTERN BADNESS' (BADNESS 0-1000), got {line!r}"
                )
            entries.append((pattern, int(value)))
        return cls(entries)

    def cgroup(self, path: str) -> int | None:
        for pattern, value in self.entries:
            if pattern.startswith("/") and fnmatch.fnmatchcase(path, pattern):
                return value
        return None

    def comm(self, comm: str) -> int | None:
        for pattern, value in self.entries:
            if not pattern.startswith("/") and fnmatch.fnmatchcase(comm, pattern):
                return value
        return None


@dataclass(frozen=True)
class LiveInfo:
    """What this machine still knows about a process or cgroup of the report."""

    cgroup: CgroupPath | None = None
    badness: int | None = None
    source: str = "default"


LiveLookup = Callable[[TaskRow], LiveInfo | None]
CgroupLookup = Callable[[CgroupPath], LiveInfo | None]


# -- the explanation -------------------------------------------------------------------


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
        return _path(report.summary["task_memcg"])
    if report.task_in is not None:
        return _path(report.task_in["task_memcg"])
    return None


def _chain(path: CgroupPath, root: CgroupPath) -> list[CgroupPath]:
    """``root`` and every cgroup between it and ``path`` (inclusive)."""
    out = [root]
    if path == root or not root.contains(path):
        return out
    cur = root
    for part in path.parts[root.depth :]:
        cur = cur.child(part)
        out.append(cur)
    return out


def build_snapshot(
    report: OomReport,
    root: CgroupPath,
    placement: dict[int, CgroupPath],
    badness: BadnessMap,
    live: LiveLookup | None,
    live_cgroup: CgroupLookup | None,
) -> tuple[Snapshot, list[str]]:
    notes: list[str] = []
    processes: dict[int, ProcessInfo] = {}
    paths: set[CgroupPath] = {root}
    for row in report.tasks:
        if row.pid in processes:
            continue
        cg = placement.get(row.pid, root)
        value = badness.comm(row.name)
        source = "process"
        if value is None and live is not None:
            info = live(row)
            if info is not None:
                if info.cgroup is not None:
                    cg = info.cgroup
                if info.badness is not None:
                    value, source = info.badness, info.source
        if value is None:
            if row.oom_score_adj == OOM_SCORE_ADJ_MIN:
                value, source = BADNESS_NEVER, "oom_score_adj"
            else:
                value, source = BADNESS_DEFAULT, "default"
        if not root.contains(cg):
            cg = root
        paths.update(_chain(cg, root))
        processes[row.pid] = row_process(row, cg, value, source)
    children: dict[CgroupPath, list[CgroupPath]] = {p: [] for p in paths}
    for p in sorted(paths):
        if p == root:
            continue
        children.setdefault(p.parent or ROOT, []).append(p)
    pids: dict[CgroupPath, list[int]] = {p: [] for p in paths}
    for proc in processes.values():
        pids.setdefault(proc.cgroup, []).append(proc.pid)
    cgroups: dict[CgroupPath, CgroupInfo] = {}
    for p in sorted(paths):
        value = badness.cgroup(p)
        source = "file"
        if value is None and live_cgroup is not None:
            info = live_cgroup(p)
            if info is not None and info.badness is not None:
                value, source = info.badness, info.source
        if value is None:
            value, source = BADNESS_DEFAULT, "default"
        usage = sum(
            (processes[pid].rss_anon_kb + processes[pid].rss_shmem_kb + processes[pid].swap_kb)
            * 1024
            for q in paths
            if p.contains(q)
            for pid in pids.get(q, [])
        )
        limit = None
        if p == root and report.memcg.get("memory"):
            limit = report.memcg["memory"]["limit_kb"] * 1024
        cgroups[p] = CgroupInfo(
            path=p,
            usage_bytes=usage,
            limit_bytes=limit,
            badness=value,
            badness_source=source,
            oom_delay_ms=None,
            oom_delay_source="default",
            oom_group=(report.group is not None and p == report.group) or None,
            under_oom=None,
            oom_kill_disable=None,
            pids=tuple(sorted(pids.get(p, []))),
            children=tuple(children.get(p, [])),
            events=MappingProxyType({}),
        )
    if len(paths) > 1 or report.tasks:
        notes.append(
            "the report names the memcg of the victim only: the other tasks are placed "
            f"in {root} unless this machine still knows where they are"
        )
    return Snapshot(1, root, MappingProxyType(cgroups), MappingProxyType(processes)), notes


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
            placement.setdefault(int(k["pid"]), _path(k["cgroup"]))
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
