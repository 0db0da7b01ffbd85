"""The words for :mod:`memcgctl.vocab.reportnotes`: how each finding of ``explain-kill``
about a saved OOM report reads, in its text and its ``--json``."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from memcgctl.vocab.reportnotes import KillVerdict, ReportNote, Said

VERDICT_TEXT = {
    KillVerdict.MATCHES: "the kernel's victim is the top of the rebuilt ranking",
    KillVerdict.DIFFERS: "the kernel's victim is NOT the top of the rebuilt ranking",
    KillVerdict.NO_TABLE: "cannot rebuild the ranking",
    KillVerdict.INCOMPLETE: "the task table is incomplete",
    KillVerdict.EXITING: "no new kill: a victim was still exiting",
    KillVerdict.NO_VICTIM: "nothing was killable",
}


# where the kernel rules of a report come from (KernelRules.source)
RULES_SOURCE_TEXT = {
    "release": "release",
    "layout": "inferred from the report's layout",
    "current": "current",
}


def _memcg_totalpages(n: ReportNote) -> str:
    return (
        f"memcg OOM: totalpages = limit {n['limit_kb']}kB"
        + (" + allowed swap" if n["with_swap"] else "")
        + f" = {n['pages']} pages (4 KiB pages assumed)"
    )


def _host_totalpages(n: ReportNote) -> str:
    return (
        f"host OOM: totalpages = {n['ram']} pages RAM - "
        f"{n['reserved']} reserved + {n['swap']} swap pages = {n['pages']} "
        "(the kernel counts managed pages; RAM minus reserved is their estimate)"
    )


def _total_from_score(n: ReportNote) -> str:
    least, most, floor = n["least"], n["most"], n["floor"]
    what = "the host's swap is not in the report" if n["swap_missing"] else "the report lacks them"
    return (
        f"totalpages from the kernel's printed score {n['printed']} for pid {n['pid']} "
        f"({what}): {least}"
        + (f" to {most}" if most != least else "")
        + f" pages; {least} is used"
        + (f" ({least - floor} pages of swap on top of the limit)" if n["swap_missing"] else "")
    )


def _rules(n: ReportNote) -> str:
    major, minor = n["version"]
    bonus = n["root_bonus"]
    return (
        f"kernel rules of {major}.{minor}"
        + (
            " (from the report's stack header)"
            if n["from_release"]
            else f" or later ({RULES_SOURCE_TEXT[n['source']]}; no stack header)"
        )
        + (
            f"; root bonus {'adj -= 30' if bonus == 'adj30' else '3%'} for uid 0"
            + (
                " (assumed: a kernel from 4.17 on has none, and the report cannot say)"
                if not n["from_release"] and bonus == "pct3"
                else ""
            )
            if bonus
            else ""
        )
        + ("; points at least 1" if n["clamp_to_one"] else "")
        + (
            "; ties go to the last scanned"
            if n["ties_to_last"]
            else "; ties go to the first scanned"
        )
    )


def _not_top(n: ReportNote) -> str:
    gap = f" ({n['gap']} points fewer)" if n["gap"] is not None else ""
    return (
        f"the kernel chose pid {n['pid']}{gap}, not the top pid "
        f"{n['top_pid']} ({n['top_comm']}): the table is printed from a "
        "second look at the counters (they move; since 6.2 they are per-CPU "
        "approximations), uid 0 stands in for CAP_SYS_ADMIN, and totalpages may be off"
    )


def _gone(n: ReportNote) -> str:
    rows = n["tasks"]
    named = ", ".join(f"pid {pid} ({comm})" for pid, comm in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return (
        f"{named}{more}: gone since the OOM; a process badness registered for "
        f"{'it' if len(rows) == 1 else 'them'} was pruned with the process, so this ranking "
        "assumes the default (500, or 1000 for oom_score_adj -1000) — the daemon may have "
        "ranked differently (explain-kill --badness FILE to say what it was)"
    )


_WORDS: dict[Said, Callable[[ReportNote], str]] = {
    Said.NO_MEMORY_LINE: lambda n: (
        "the report has no 'memory: usage …, limit …' line: totalpages unknown"
    ),
    Said.SWAP_COUNTED_IN_FULL: lambda n: (
        "the memcg may use swap but the report does not show the host's swap "
        "size: its allowed swap is counted in full"
    ),
    Said.SWAP_UNLIMITED_UNKNOWN: lambda n: (
        "the memcg's swap is unlimited and the report does not show the "
        "host's swap size: totalpages counts no swap (if swap was in use, "
        "each oom_score_adj point was worth more)"
    ),
    Said.MEMCG_TOTALPAGES: _memcg_totalpages,
    Said.NO_RAM_LINE: lambda n: "host OOM without a 'N pages RAM' line: totalpages unknown",
    Said.HOST_TOTALPAGES: _host_totalpages,
    Said.NO_SWAP_LINE: lambda n: "the report shows no 'Total swap' line: no swap counted",
    Said.TOTAL_DOES_NOT_MATTER: lambda n: (
        "totalpages unknown, but no candidate has an oom_score_adj: the ranking is by rss + "
        "swap + page tables alone (points shown with totalpages taken as 1000)"
    ),
    Said.SCORE_WITHOUT_BONUS: lambda n: (
        f"the kernel printed score {n['printed']} for pid {n['pid']} (uid 0): that is "
        "its points WITHOUT the root bonus, so it lacked CAP_SYS_ADMIN (a "
        "container drops it); the other uid-0 tasks are scored the same way "
        "(the log does not show each task's capabilities)"
    ),
    Said.SCORE_WITH_BONUS: lambda n: (
        f"the kernel printed score {n['printed']} for pid {n['pid']} (uid 0): that is "
        "its points with the root bonus (CAP_SYS_ADMIN); uid-0 tasks get it"
    ),
    Said.TOTAL_FROM_SCORE: _total_from_score,
    Said.BONUS_GUESSED: lambda n: (
        "uid 0 and totalpages are both unknown: the root bonus "
        + ("is assumed" if n["assumed"] else "is assumed absent")
        + " (the first that fits the printed score); the other reading may fit too"
    ),
    Said.COLUMNS_INFERRED: lambda n: (
        "the log begins inside the task table (no header): its columns are read from "
        f"the rows ({' '.join(n['columns'])})"
    ),
    Said.RULES: _rules,
    Said.CANDIDATES: lambda n: (
        f"{n['scored']} candidates in the report's task table, {n['skipped']} never "
        "eligible (oom_score_adj -1000, init)"
    ),
    Said.SCORE_AGREES: lambda n: (
        f"the kernel printed score {n['printed']} for its victim; the rebuilt points "
        "give the same (points × 1000 / totalpages): totalpages and rules check out"
    ),
    Said.SCORE_DIFFERS: lambda n: (
        f"the kernel printed score {n['printed']} for its victim; rebuilt: {n['rebuilt']} "
        "(points × 1000 / totalpages) — totalpages or the counters differ"
    ),
    Said.EXITING: lambda n: (
        f"pid {n['pid']} ({n['comm']}) was already an OOM victim "
        "and still exiting: the kernel killed nothing new and waited for it"
    ),
    Said.NO_KILLABLE: lambda n: "the kernel found no killable process",
    Said.TABLE_CUT: lambda n: (
        "the report's task table is cut short (its header ends before the name "
        "column: an ellipsized or truncated log): the ranking cannot be rebuilt"
    ),
    Said.NO_TABLE: lambda n: (
        "the report has no task table this reader can read (rate-limited report, "
        "vm.oom_dump_tasks=0, or a truncated log): the ranking cannot be rebuilt"
    ),
    Said.NO_TOTALPAGES: lambda n: "the report lacks the lines that give totalpages: cannot score",
    Said.NOT_IN_TABLE: lambda n: (
        f"the kernel's victim pid {n['pid']} is not in the task table: the table "
        "is incomplete (truncated or interleaved lines)"
    ),
    Said.THREAD_OF: lambda n: (
        f"the kernel chose pid {n['kernel_pid']} ({n['comm']}), which is no row "
        f"of the task table (its rows are processes), and killed pid {n['pid']} of "
        f"the same name: pid {n['kernel_pid']} is taken as a thread of {n['pid']} (the "
        "log cannot tell a thread from a child of the same name)"
    ),
    Said.ROWS_ONLY: lambda n: (
        f"the log holds {n['rows']} rows of the task table and no header: "
        "the ranking is among those rows only"
    ),
    Said.TOP: lambda n: (
        f"the kernel's victim pid {n['pid']} ({n['comm']}) is the top of "
        f"the rebuilt ranking with {n['points']} points"
    ),
    Said.NOT_TOP: _not_top,
    Said.SACRIFICE: lambda n: (
        f"sacrifice child: the kernel chose pid {n['pid']} "
        f"({n['comm']}) and killed its child pid {n['child']} instead "
        "(kernels before 4.19 killed a child with its own memory first)"
    ),
    Said.OOM_GROUP: lambda n: (
        f"memory.oom.group: every task of {n['group']} was killed with the victim "
        f"({n['kills']} kills in this report)"
    ),
    Said.VICTIM_MEMCG_ONLY: lambda n: (
        "the report names the memcg of the victim only: the other tasks are placed "
        f"in {n['root']} unless this machine still knows where they are"
    ),
    Said.GONE: _gone,
}


def note_text(n: ReportNote) -> str:
    """One finding in a sentence."""
    return _WORDS[n.said](n)


def note_lines(notes: Iterable[ReportNote]) -> list[str]:
    return [note_text(n) for n in notes]
