"""The kernel policy: the stock heuristic of ``mm/oom_kill.c`` (``oom_badness``,
``select_bad_process``), reproduced as exactly as userspace allows.

:func:`select_kernel` is what ``predict-victim --policy kernel`` and the daemon with
that policy call: every eligible process of the OOM domain scored in the kernel's scan
order against ``totalpages`` (:func:`host_totalpages` for a host OOM,
:func:`memcg_totalpages` for a memcg OOM), the highest points dying.  Every input is in
the snapshot or passed as a plain value (:class:`~memcgctl.vocab.model.KernelParams`);
nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Iterator

from memcgctl.logic.decision import (
    KERNEL,
    Decision,
    Scored,
    kids_in_creation_order,
    victim_group,
)
from memcgctl.logic.oombadness import CURRENT_RULES, may_be_chosen, oom_badness, proc_score
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.model import CgroupInfo, KernelParams, ProcessInfo, Snapshot
from memcgctl.vocab.reasons import (
    Caveat,
    HostPages,
    MemcgPages,
    MostPoints,
    NoKillableProcess,
    NoLimit,
    NotInSnapshot,
    PointsTie,
    Reason,
    ScoredCount,
)

# Where userspace cannot be exact (README "predict-victim"); shown by --explain.
KERNEL_CAVEATS = (
    Caveat.RSS_APPROXIMATE,
    Caveat.SHARED_MM,
    Caveat.VICTIM_EXITING,
    Caveat.TASK_ORIGIN,
)


# -- policy "kernel" (mm/oom_kill.c: oom_badness, select_bad_process) ------------------


def host_totalpages(params: KernelParams) -> int:
    """RAM + swap pages (``totalram_pages() + total_swap_pages``)."""
    return params.mem_total_kb // params.page_kb + params.swap_total_kb // params.page_kb or 1


def memcg_totalpages(cg: CgroupInfo, params: KernelParams) -> int:
    """``mem_cgroup_get_max``: the memcg's limit plus the swap it may use.

    v1: memsw limit − memory limit; v2: memory.swap.max; either capped by the host's
    swap, and added only when the memcg's swappiness (v2: vm.swappiness) is not 0.
    Ancestors' limits do not count.  A result of 0 counts as 1.  A memcg without a
    limit cannot run out on its own; we then use the host's RAM + swap.
    """
    if cg.limit_bytes is None:
        return host_totalpages(params)
    pages = cg.limit_bytes // params.page_size
    swappiness = params.vm_swappiness
    if params.version == 1 and cg.path != ROOT and cg.swappiness is not None:
        swappiness = cg.swappiness
    if swappiness:
        swap_total = params.swap_total_kb // params.page_kb
        swap = (
            swap_total if cg.swap_limit_bytes is None else cg.swap_limit_bytes // params.page_size
        )
        pages += min(swap, swap_total)
    return pages or 1


def oom_eligible(p: ProcessInfo) -> bool:
    """Kernel threads, processes without an mm, init and -1000 are never chosen."""
    return p.killable and may_be_chosen(p.pid, p.oom_score_adj)


def score(p: ProcessInfo, totalpages: int, params: KernelParams, index: int = 0) -> Scored:
    """``oom_badness`` (:func:`~memcgctl.logic.oombadness.oom_badness`, the running
    kernel's rules): resident + swap + page-table pages, plus
    ``oom_score_adj * (totalpages / 1000)`` (integer division first)."""
    pk = params.page_kb
    rss = p.rss_anon_kb // pk + p.rss_file_kb // pk + p.rss_shmem_kb // pk
    swap = p.swap_kb // pk
    pte = p.pgtables_kb * 1024 // params.page_size
    points, adj = oom_badness(rss + swap + pte, p.oom_score_adj, p.uid, totalpages, CURRENT_RULES)
    return Scored(p, points, index, rss, swap, pte, adj)


def proc_oom_score(p: ProcessInfo, params: KernelParams) -> int:
    """What ``/proc/PID/oom_score`` shows on 5.9+ (host totalpages, 0 if ineligible)."""
    if not oom_eligible(p):
        return 0
    total = host_totalpages(params)
    points = score(p, total, params).points
    return proc_score(points, total)


def scan_order(snap: Snapshot, oom_root: CgroupPath) -> Iterator[ProcessInfo]:
    """The processes in the order the kernel scans them (approximated, see
    Caveat.SCAN_ORDER_*): host OOM by pid; memcg OOM by memcg pre-order (creation order),
    then pid within a memcg."""
    if oom_root == ROOT:
        yield from sorted(snap.subtree_processes(ROOT), key=lambda p: p.pid)
        return
    start = snap.cgroups.get(oom_root)
    if start is None:
        return
    stack = [start]
    while stack:
        cg = stack.pop()
        yield from sorted(snap.processes_in(cg.path), key=lambda p: p.pid)
        stack.extend(reversed(kids_in_creation_order(snap, cg)))


def select_kernel(snap: Snapshot, oom_root: CgroupPath, params: KernelParams) -> Decision:
    """The kernel's own choice if ``oom_root`` ran out of memory.

    ``oom_root == "/"`` is a host OOM (totalpages = RAM + swap, every process); any
    other cgroup is a memcg OOM of that cgroup (totalpages from its limit, the
    processes of its subtree).  The highest points die; on equal points the one
    scanned last (Linux 5.3+).  The ranked candidates come back in
    ``Decision.candidates``, the victim first.
    """
    memcg_oom = oom_root != ROOT
    cg = snap.cgroups.get(oom_root)
    if cg is None:
        return Decision(KERNEL, oom_root, None, reasons=(NotInSnapshot(oom_root),))
    reasons: list[Reason] = []
    if memcg_oom:
        totalpages = memcg_totalpages(cg, params)
        if cg.limit_bytes is None:
            reasons.append(NoLimit(oom_root, totalpages))
        else:
            reasons.append(MemcgPages(oom_root, cg.limit_bytes, totalpages))
    else:
        totalpages = host_totalpages(params)
        reasons.append(HostPages(totalpages))
    scored: list[Scored] = []
    skipped = 0
    for i, p in enumerate(scan_order(snap, oom_root)):
        if not oom_eligible(p):
            skipped += 1
            continue
        scored.append(score(p, totalpages, params, i))
    # the kernel keeps a task unless a later one has points >= its own: the last
    # scanned wins a tie
    scored.sort(key=lambda s: (-s.points, -s.scan_index))
    caveats = [Caveat.SCAN_ORDER_MEMCG if memcg_oom else Caveat.SCAN_ORDER_HOST, *KERNEL_CAVEATS]
    if params.oom_kill_allocating_task and not memcg_oom:
        caveats.insert(0, Caveat.ALLOCATING_TASK)
    reasons.append(ScoredCount(len(scored), skipped))
    if not scored:
        reasons.append(NoKillableProcess())
        return Decision(
            KERNEL,
            oom_root,
            None,
            totalpages=totalpages,
            reasons=tuple(reasons),
            caveats=tuple(caveats),
        )
    top = scored[0]
    reasons.append(
        MostPoints(
            top.process.pid,
            top.process.comm,
            top.points,
            top.rss_pages,
            top.swap_pages,
            top.pgtable_pages,
            top.adj_pages,
        )
    )
    if len(scored) > 1 and scored[1].points == top.points:
        reasons.append(PointsTie(scored[1].process.pid, top.points))
    group, pids, group_reasons = victim_group(snap, top.process, oom_root)
    return Decision(
        KERNEL,
        oom_root,
        top.process,
        kill_group=group,
        group_pids=pids,
        candidates=tuple(scored),
        points=top.points,
        totalpages=totalpages,
        reasons=tuple(reasons + group_reasons),
        caveats=tuple(caveats),
    )
