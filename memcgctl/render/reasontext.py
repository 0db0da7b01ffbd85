"""The words for :mod:`memcgctl.vocab.reasons`: how each reason, verdict and caveat of a
victim choice reads, in ``predict-victim --explain`` and ``--json``, ``explain-kill``
and the daemon's journal (which is why this module imports nothing heavy)."""

from __future__ import annotations

from collections.abc import Iterable

from memcgctl.render.reportwords import note_text
from memcgctl.vocab.reasons import (
    Caveat,
    GroupKill,
    HostPages,
    LevelChoice,
    Lost,
    MemcgPages,
    MostPoints,
    NoKillableAt,
    NoKillableProcess,
    NoLimit,
    NotInSnapshot,
    Reason,
    ScoredCount,
    Skip,
    Tie,
    Verdict,
    Win,
)
from memcgctl.vocab.reportnotes import ReportNote
from memcgctl.vocab.units import format_bytes, format_kb

SKIP_TEXT = {
    Skip.ALREADY_CHOSEN: "already chosen",
    Skip.INIT: "init",
    Skip.NO_MEMORY: "kernel thread or exiting (no memory to free)",
    Skip.ADJ_NEVER: "oom_score_adj -1000: never",
    Skip.BADNESS_NEVER: "badness 1000: never",
    Skip.NOTHING_INSIDE: "nothing killable inside",
}

TIE_TEXT = {
    Tie.CGROUP_BEFORE_PROCESS: "ties with processes of the same badness: a cgroup goes first",
    Tie.LOWEST_PID_INSIDE: "tie on badness and usage: the one holding the lowest pid",
    Tie.LARGEST_USAGE: "tie on badness: the largest memory usage",
    Tie.LOWEST_PID: "tie on badness and rss: the lowest pid",
    Tie.LARGEST_RSS: "tie on badness: the largest rss",
}

CAVEAT_TEXT = {
    Caveat.SCAN_ORDER_MEMCG: (
        "scan order: the OOM memcg first, then its descendants in pre-order, siblings in "
        "creation order (approximated by the cgroup directory's inode number, which kernfs "
        "allocates increasing), the processes of one memcg in pid order (the kernel: the "
        "order they joined it)"
    ),
    Caveat.SCAN_ORDER_HOST: (
        "scan order: every process in creation order (for_each_process), approximated by "
        "pid order — wrong only after pids wrapped around"
    ),
    Caveat.ALLOCATING_TASK: (
        "vm.oom_kill_allocating_task=1: a host OOM kills whichever task is "
        "allocating, without scoring — this ranking is not used"
    ),
    Caveat.RSS_APPROXIMATE: (
        "rss comes from /proc/PID/status, which since Linux 6.2 reads per-CPU counters "
        "approximately; the kernel sums them exactly (off by at most ~64 pages per CPU)"
    ),
    Caveat.SHARED_MM: (
        "processes sharing one mm (CLONE_VM without threads, vfork children) die together; "
        "vfork children and mms the OOM reaper already skipped are never chosen — "
        "invisible from /proc"
    ),
    Caveat.VICTIM_EXITING: (
        "if a process in scope is already an OOM victim and still exiting, the kernel kills "
        "nothing new and waits"
    ),
    Caveat.TASK_ORIGIN: (
        "a task running swapoff or KSM unmerge (oom_task_origin) is always chosen first"
    ),
    Caveat.TABLE_MEMCG_VICTIM_ONLY: "the task table lists each task's memcg only for the victim",
    Caveat.AS_PRINTED: "rss, swap and page tables are as printed when the report was written",
}


def process_name(pid: int, comm: str) -> str:
    return f"pid {pid} ({comm})"


def win_text(w: Win) -> str:
    text = f"lowest badness ({w.badness})"
    return text + (", strictly lower than every sibling cgroup" if w.beat_cgroups else "")


def verdict_text(v: Verdict) -> str:
    """A candidate's note: why it was taken, why it lost, or why it was skipped."""
    if v.skip is not None:
        return SKIP_TEXT[v.skip]
    if v.only:
        return "chosen: the only killable candidate"
    if v.win is not None:
        tie = v.win.tie
        return "chosen: " + win_text(v.win) + (f"; {TIE_TEXT[tie]}" if tie else "")
    if v.lost is None:
        return ""
    return {
        Lost.HIGHER_BADNESS: f"badness {v.badness} > {v.chosen_badness}",
        Lost.CGROUP_FIRST: "same badness: a cgroup goes before a process",
        Lost.SMALLER_USAGE: f"same badness, smaller usage (usage {format_bytes(v.usage_bytes)})",
        Lost.HIGHER_PID_INSIDE: "same badness and usage: the chosen one holds a lower pid",
        Lost.SMALLER_RSS: f"same badness, smaller rss (rss {format_kb(v.rss_kb)})",
        Lost.HIGHER_PID: "same badness and rss: higher pid",
    }[v.lost]


def reason_text(r: Reason) -> str:
    """One step of a decision in a sentence."""
    if isinstance(r, ReportNote):
        return note_text(r)
    if isinstance(r, NotInSnapshot):
        return f"{r.cgroup}: not in the snapshot"
    if isinstance(r, NoKillableAt):
        return f"{r.cgroup}: no killable candidate"
    if isinstance(r, LevelChoice):
        name = r.path if r.pid is None else process_name(r.pid, r.comm or "")
        tie = r.win.tie
        looked = f" ({r.unchecked} ranked after it, not looked into)" if r.unchecked else ""
        return (
            f"{r.cgroup}: {r.eligible} killable of {r.candidates} candidates{looked}; "
            f"{r.kind} {name} has the {win_text(r.win)}" + (f" ({TIE_TEXT[tie]})" if tie else "")
        )
    if isinstance(r, GroupKill):
        return (
            f"{r.group} has memory.oom.group=1 (the highest such cgroup between the victim "
            f"and the OOM root): all {r.pids} of its processes die together, except "
            "oom_score_adj -1000 and init"
        )
    if isinstance(r, NoLimit):
        return (
            f"{r.cgroup} has no memory limit, so it cannot run out on its own; "
            f"points use the host's RAM + swap ({r.totalpages} pages)"
        )
    if isinstance(r, MemcgPages):
        return (
            f"memcg OOM of {r.cgroup}: totalpages = limit {format_bytes(r.limit_bytes)}"
            f" + allowed swap = {r.totalpages} pages, so each oom_score_adj point is worth "
            f"{r.totalpages // 1000} pages"
        )
    if isinstance(r, HostPages):
        return (
            f"host OOM: totalpages = RAM + swap = {r.totalpages} pages, so each "
            f"oom_score_adj point is worth {r.totalpages // 1000} pages"
        )
    if isinstance(r, ScoredCount):
        return (
            f"{r.scored} candidates scored, {r.never_eligible} never eligible (kernel threads, "
            "init, no mm, oom_score_adj -1000)"
        )
    if isinstance(r, NoKillableProcess):
        return "no killable process: the kernel would report 'no killable processes'"
    if isinstance(r, MostPoints):
        return (
            f"{process_name(r.pid, r.comm)} has the most points: {r.points} = "
            f"rss {r.rss_pages} + swap {r.swap_pages} + page tables {r.pgtable_pages} "
            f"+ adj {r.adj_pages} pages"
        )
    return f"tie with pid {r.pid} at {r.points} points: the kernel keeps the one it scans last"


def reason_lines(reasons: Iterable[Reason]) -> list[str]:
    return [reason_text(r) for r in reasons]


def caveat_lines(caveats: Iterable[Caveat]) -> list[str]:
    return [CAVEAT_TEXT[c] for c in caveats]
