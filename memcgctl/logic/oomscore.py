"""The kernel's OOM scoring rebuilt from a report: its rules by version, the OOM domain,
totalpages, every task's points and the ranking (``mm/oom_kill.c`` ``oom_badness`` and
``select_bad_process``; pure, no I/O).

Kernel rules by version (the release from the stack dump header; else the least the
report's layout proves):

* points = rss + swap entries + page tables (3.x ``nr_ptes``, 4.x ``+ nr_pmds``, 4.15+
  ``pgtables_bytes`` / page size) + ``oom_score_adj * (totalpages / 1000)``;
* before 3.8 (2.6.36's heuristic, and RHEL 6's 2.6.32 backport of it) points were
  normalised: ``(rss + page tables + swap) * 1000 / totalpages``, ``- 30`` for root,
  ``+ oom_score_adj``, at least 1 and at most 1000, and the victim is the highest of
  these integers (coarse: ties are common); 3.8 (commit a7f638f999ff, "normalize oom
  scores to oom_score_adj scale only for userspace") moved to pages;
* root bonus (CAP_SYS_ADMIN, approximated by uid 0): before 3.14 ``adj -= 30``,
  3.14-4.16 ``points -= points * 3 / 100``; gone in 4.17;
* an eligible task scores at least 1 before 5.9;
* ties: the first scanned wins before 5.3, the last one since (``oom_evaluate_task``
  passes a task over only when its points are strictly lower).  Up to 5.2 it also
  passed over an equal task when the one already chosen was a thread-group leader
  ("prefer thread group leaders for display purposes"); the 5.3 form (the one that
  calls ``oom_cpuset_eligible()`` and the two-argument ``oom_badness()``) has no such
  check, and no later kernel does;
* ``oom_score_adj == -1000`` is never chosen; the table's order is the scan order.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from memcgctl.logic.decision import Scored
from memcgctl.logic.oombadness import (
    KernelRules,
    Version,
    may_be_chosen,
    oom_badness,
    rules_of_version,
)
from memcgctl.logic.oombadness import printed_score as kernel_printed_score
from memcgctl.logic.oomlines import MEMCG_OOM_MESSAGE
from memcgctl.logic.oomreport import OomReport
from memcgctl.logic.oomtable import TaskRow
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.model import BADNESS_DEFAULT, ProcessInfo
from memcgctl.vocab.reportnotes import ReportNote, Said, note

PAGE_KB = 4
UNLIMITED_KB = 1 << 50  # v1 prints "limit 9007199254740988kB" for no limit


def parse_release(release: str | None) -> Version | None:
    if not release:
        return None
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def rules_for(report: OomReport) -> KernelRules:
    v = parse_release(report.release)
    source = "release"
    if v is None:
        source = "layout"  # inferred from the report's layout
        v = (3, 0)
        layout = report.layout
        kill = report.kills[0] if report.kills else None
        if layout == "nr_pmds":
            v = (4, 1)
        elif layout == "pgtables_bytes":
            v = (4, 15)  # 4.15.0 prints it (shared/data excerpt 13, with its release line)
        if report.summary is not None:
            v = max(v, (5, 0))
        if kill is not None and kill.get("oom_score_adj") is not None:
            v = max(v, (5, 4))
        if layout == "rss_anon":
            v = max(v, (6, 8))
    return rules_of_version(v, source)


# -- totalpages ----------------------------------------------------------------------


def printed_path(text: object) -> CgroupPath:
    """A cgroup path the report printed (the root if it is none: the log is text)."""
    return CgroupPath.parse(str(text)) or ROOT


def oom_root(report: OomReport) -> CgroupPath:
    """The OOM domain: the memcg that hit its limit, or ``/`` for a host OOM."""
    s = report.summary
    if s is not None:
        if s.get("global_oom"):
            return ROOT
        if s.get("oom_memcg"):
            return printed_path(s["oom_memcg"])
    if report.task_in is not None:
        return printed_path(report.task_in["oom_memcg"])
    for k in report.kills:
        if k.get("oom_memcg"):
            return printed_path(k["oom_memcg"])
    return ROOT


def is_memcg_oom(report: OomReport) -> bool:
    if oom_root(report) != "/":
        return True
    msg = next((k.get("message") for k in report.kills if k.get("message")), None)
    if msg is None and report.select is not None:
        msg = report.select.get("message")
    return msg == MEMCG_OOM_MESSAGE or (
        report.summary is not None and report.summary.get("constraint") == "CONSTRAINT_MEMCG"
    )


def totalpages(report: OomReport) -> tuple[int | None, list[ReportNote]]:
    """(totalpages or None if the report does not say, notes on how it was found)."""
    notes: list[ReportNote] = []
    swap_total = report.swap_total_kb // PAGE_KB if report.swap_total_kb is not None else None
    if is_memcg_oom(report):
        mem = report.memcg.get("memory")
        if mem is None:
            return None, [note(Said.NO_MEMORY_LINE)]
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
                notes.append(note(Said.SWAP_COUNTED_IN_FULL))
            else:
                notes.append(note(Said.SWAP_UNLIMITED_UNKNOWN))
        with_swap = pages != mem["limit_kb"] // PAGE_KB
        notes.append(
            note(
                Said.MEMCG_TOTALPAGES,
                limit_kb=mem["limit_kb"],
                with_swap=with_swap,
                pages=pages or 1,
            )
        )
        return pages or 1, notes
    if report.ram_pages is None:
        return None, [note(Said.NO_RAM_LINE)]
    ram = report.ram_pages - (report.reserved_pages or 0)
    pages = ram + (swap_total or 0)
    notes.append(
        note(
            Said.HOST_TOTALPAGES,
            ram=report.ram_pages,
            reserved=report.reserved_pages or 0,
            swap=swap_total or 0,
            pages=pages,
        )
    )
    if swap_total is None:
        notes.append(note(Said.NO_SWAP_LINE))
    return pages or 1, notes


# -- scoring -------------------------------------------------------------------------


def row_points(row: TaskRow, total: int, rules: KernelRules) -> tuple[int, int]:
    """(points, the part of them that is not rss + swap + page tables)."""
    base = row.rss + row.swapents + row.pgtable_pages
    return oom_badness(base, row.oom_score_adj, row.uid, total, rules)


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
        if not may_be_chosen(row.pid, row.oom_score_adj):
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


# -- the kernel's printed score as a witness ------------------------------------------


def printed_score(row: TaskRow, total: int, rules: KernelRules) -> int:
    """The score 3.x-4.18 print in ``Kill process N (comm) score S``: points × 1000 /
    totalpages."""
    points, _ = row_points(row, total, rules)
    return kernel_printed_score(points, total, rules)


def memcg_swap_unknown(report: OomReport) -> bool:
    """A memcg OOM whose totalpages needs the host's swap size, which a memcg report does
    not print (v1 ``memory+swap`` unlimited, no ``Total swap`` line)."""
    if not is_memcg_oom(report) or report.swap_total_kb is not None:
        return False
    mem = report.memcg.get("memory")
    memsw = report.memcg.get("memory+swap")
    swap = report.memcg.get("swap")
    if mem is None:
        return False
    if swap is not None:
        return swap["limit_kb"] // PAGE_KB >= UNLIMITED_KB // PAGE_KB
    return memsw is not None and memsw["limit_kb"] - mem["limit_kb"] >= UNLIMITED_KB


def totalpages_from_score(
    row: TaskRow, score: int, rules: KernelRules, floor: int = 1
) -> tuple[int, int] | None:
    """The totalpages (least, most) at or above ``floor`` for which ``row`` scores the
    ``score`` the kernel printed; None if none does.  The score falls as totalpages
    grows (points × 1000 / totalpages, plus the adj term that stays near adj)."""
    hi_bound = 1 << 44

    def f(t: int) -> int:
        return printed_score(row, t, rules)

    if f(floor) < score:
        return None
    lo, hi = floor, hi_bound
    while lo < hi:  # least t with f(t) <= score
        mid = (lo + hi) // 2
        if f(mid) <= score:
            hi = mid
        else:
            lo = mid + 1
    least = lo
    if least >= hi_bound or f(least) != score:
        return None
    lo, hi = least, hi_bound
    while lo < hi:  # least t with f(t) < score
        mid = (lo + hi) // 2
        if f(mid) < score:
            hi = mid
        else:
            lo = mid + 1
    return least, lo - 1
