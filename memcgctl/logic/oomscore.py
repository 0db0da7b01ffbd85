"""The kernel's OOM scoring rebuilt from a report: its rules by version, the OOM domain,
totalpages, every task's points and the ranking (``mm/oom_kill.c`` ``oom_badness`` and
``select_bad_process``; pure, no I/O).

Kernel rules by version (the release from the stack dump header; else the least the
report's layout proves):

* points = rss + swap entries + page tables (3.x ``nr_ptes``, 4.x ``+ nr_pmds``, 4.15+
  ``pgtables_bytes`` / page size) + ``oom_score_adj * (totalpages / 1000)``;
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
from dataclasses import dataclass

from memcgctl.logic.decision import Scored
from memcgctl.logic.oomreport import OomReport, TaskRow
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.model import BADNESS_DEFAULT, ProcessInfo

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
