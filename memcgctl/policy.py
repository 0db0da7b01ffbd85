"""Victim selection: pure functions over a :class:`~memcgctl.model.Snapshot`.

Two policies, one function each, shared by ``predict-victim`` and the daemon:

* :func:`select_priority` — memcgctl's strict-priority walk;
* :func:`select_kernel` — the stock kernel heuristic of ``mm/oom_kill.c``,
  reproduced as exactly as userspace allows.

Nothing here reads a file: every input is in the snapshot or passed as a plain value
(:class:`KernelParams`).  The result is a frozen :class:`Decision` with the victim, the
group that would die with it (``memory.oom.group``), the reasoning step by step (the
priority walk, or the kernel's ranked candidates), and human-readable reasons.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from memcgctl.cgpath import ROOT, CgroupPath
from memcgctl.model import BADNESS_NEVER, CgroupInfo, ProcessInfo, Snapshot
from memcgctl.units import format_bytes, format_kb

OOM_SCORE_ADJ_MIN = -1000

PRIORITY = "priority"
KERNEL = "kernel"
POLICIES = (PRIORITY, KERNEL)

# Where userspace cannot be exact (README "predict-victim"); shown by --explain.
KERNEL_CAVEATS = (
    "rss comes from /proc/PID/status, which since Linux 6.2 reads per-CPU counters "
    "approximately; the kernel sums them exactly (off by at most ~64 pages per CPU)",
    "processes sharing one mm (CLONE_VM without threads, vfork children) die together; "
    "vfork children and mms the OOM reaper already skipped are never chosen — "
    "invisible from /proc",
    "if a process in scope is already an OOM victim and still exiting, the kernel kills "
    "nothing new and waits",
    "a task running swapoff or KSM unmerge (oom_task_origin) is always chosen first",
)
SCAN_ORDER_MEMCG = (
    "scan order: the OOM memcg first, then its descendants in pre-order, siblings in "
    "creation order (approximated by the cgroup directory's inode number, which kernfs "
    "allocates increasing), the processes of one memcg in pid order (the kernel: the "
    "order they joined it)"
)
SCAN_ORDER_HOST = (
    "scan order: every process in creation order (for_each_process), approximated by "
    "pid order — wrong only after pids wrapped around"
)


# -- results ------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One candidate at one level of the priority walk: a child cgroup or a process
    attached directly to the level."""

    kind: Literal["cgroup", "process"]
    badness: int
    cgroup: CgroupInfo | None = None
    process: ProcessInfo | None = None
    # None if eligible; else why it can never be chosen ("badness 1000 (never)", ...)
    skip: str | None = None
    # The verdict in words: why it was taken, or why it lost to the chosen one.
    note: str = ""

    @property
    def name(self) -> str:
        if self.process is not None:
            return f"pid {self.process.pid} ({self.process.comm})"
        assert self.cgroup is not None
        return self.cgroup.path

    @property
    def usage_bytes(self) -> int:
        return (self.cgroup.usage_bytes or 0) if self.cgroup is not None else 0

    @property
    def rss_kb(self) -> int:
        return self.process.rss_kb if self.process is not None else 0


@dataclass(frozen=True)
class Level:
    """One step of the priority walk: the candidates at cgroup ``cgroup`` (ranked: the
    chosen one first, then the other eligible ones in order, then the skipped ones)."""

    cgroup: CgroupPath
    candidates: tuple[Candidate, ...]
    chosen: Candidate | None


class Scored(NamedTuple):
    """A process as the kernel heuristic sees it.  (A NamedTuple: one per process on
    the host, and tuples are cheap to build.)"""

    process: ProcessInfo
    points: int
    scan_index: int  # position in the kernel's scan order (approximated)
    rss_pages: int
    swap_pages: int
    pgtable_pages: int
    adj_pages: int  # oom_score_adj * (totalpages // 1000)


@dataclass(frozen=True)
class Decision:
    policy: str
    oom_root: CgroupPath
    victim: ProcessInfo | None
    # memory.oom.group: the highest group from the victim's cgroup up to the OOM root
    kill_group: CgroupPath | None = None
    # every pid that dies: the victim, or the whole group (minus -1000 and init)
    group_pids: tuple[int, ...] = ()
    walk: tuple[Level, ...] = ()  # priority
    candidates: tuple[Scored, ...] = ()  # kernel: ranked, the victim first
    points: int | None = None  # kernel: the victim's points
    totalpages: int | None = None  # kernel
    reasons: tuple[str, ...] = ()  # the decision in words, in order
    caveats: tuple[str, ...] = field(default=())  # where the prediction may be wrong


# -- shared helpers ------------------------------------------------------------------


def kids(snap: Snapshot, cg: CgroupInfo) -> list[CgroupInfo]:
    return [snap.cgroups[c] for c in cg.children if c in snap.cgroups]


def kids_in_creation_order(snap: Snapshot, cg: CgroupInfo) -> list[CgroupInfo]:
    """Children as the kernel's css iterator visits them: creation order, which the
    directory inode number tracks (kernfs allocates them increasing)."""
    return sorted(kids(snap, cg), key=lambda c: (c.ino, c.path))


def oom_group_of(snap: Snapshot, victim: ProcessInfo, oom_root: CgroupPath) -> CgroupPath | None:
    """``mem_cgroup_get_oom_group``: walking from the victim's memcg up to the OOM
    domain (inclusive), the highest memcg with ``memory.oom.group`` set, if any.
    v1 never group-kills (``oom_group`` is None there); the root memcg never counts."""
    cg: CgroupPath | None = victim.cgroup
    if cg == ROOT or not oom_root.contains(victim.cgroup):
        return None
    group = None
    while cg is not None and cg != ROOT:
        info = snap.cgroups.get(cg)
        if info is not None and info.oom_group:
            group = cg
        if cg == oom_root:
            break
        cg = cg.parent
    return group


def group_kill_pids(snap: Snapshot, group: CgroupPath) -> tuple[int, ...]:
    """Every pid the kernel signals for a group kill (``oom_kill_memcg_member``): the
    subtree's processes except ``oom_score_adj == -1000`` and init."""
    return tuple(
        sorted(
            p.pid
            for p in snap.subtree_processes(group)
            if p.oom_score_adj != OOM_SCORE_ADJ_MIN and p.pid != 1 and p.killable
        )
    )


def _victim_group(
    snap: Snapshot, victim: ProcessInfo, oom_root: CgroupPath
) -> tuple[CgroupPath | None, tuple[int, ...], list[str]]:
    group = oom_group_of(snap, victim, oom_root)
    if group is None:
        return None, (victim.pid,), []
    pids = group_kill_pids(snap, group)
    if victim.pid not in pids:
        pids = tuple(sorted((*pids, victim.pid)))
    return (
        group,
        pids,
        [
            f"{group} has memory.oom.group=1 (the highest such cgroup between the victim "
            f"and the OOM root): all {len(pids)} of its processes die together, except "
            "oom_score_adj -1000 and init"
        ],
    )


# -- policy "priority" ---------------------------------------------------------------


def _process_skip(p: ProcessInfo, exclude: frozenset[int]) -> str | None:
    if p.pid in exclude:
        return "already chosen"
    if not p.killable:
        return "init" if p.pid == 1 else "kernel thread or exiting (no memory to free)"
    if p.badness >= BADNESS_NEVER:
        if p.badness_source == "oom_score_adj":
            return "oom_score_adj -1000: never"
        return "badness 1000: never"
    return None


class _Viability:
    """Memo: the lowest selectable pid in each subtree (None = nothing to kill there)."""

    def __init__(self, snap: Snapshot, exclude: frozenset[int]) -> None:
        self.snap = snap
        self.exclude = exclude
        self.memo: dict[str, int | None] = {}

    def min_pid(self, cg: CgroupInfo) -> int | None:
        if cg.path in self.memo:
            return self.memo[cg.path]
        best: int | None = None
        for p in self.snap.processes_in(cg.path):
            if _process_skip(p, self.exclude) is None and (best is None or p.pid < best):
                best = p.pid
        for kid in kids(self.snap, cg):
            if kid.badness >= BADNESS_NEVER:
                continue
            m = self.min_pid(kid)
            if m is not None and (best is None or m < best):
                best = m
        self.memo[cg.path] = best
        return best


def _rank_key(c: Candidate, viable: _Viability) -> tuple[int, int, int, int, str]:
    """Ascending: the first one dies.  Lowest badness; on equal badness a cgroup beats
    a process; cgroups by largest usage, processes by largest rss; then lowest pid
    (for a cgroup: the lowest killable pid inside it); then the name."""
    if c.process is not None:
        return (c.badness, 1, -c.process.rss_kb, c.process.pid, "")
    assert c.cgroup is not None
    return (c.badness, 0, -c.usage_bytes, viable.min_pid(c.cgroup) or 0, c.cgroup.path)


def _size(c: Candidate) -> str:
    if c.process is not None:
        return f"rss {format_kb(c.process.rss_kb)}"
    return f"usage {format_bytes(c.usage_bytes)}"


def _verdict(c: Candidate, chosen: Candidate, others: list[Candidate]) -> str:
    """Why ``c`` lost to ``chosen`` (or, for ``chosen`` itself, why it won against
    ``others``, the other eligible candidates)."""
    if c is chosen:
        if not others:
            return "chosen: the only killable candidate"
        beat = any(o.kind == "cgroup" for o in others)
        tie = _tie_detail(chosen, [chosen, *others])
        return "chosen: " + _win_reason(chosen, beat) + (f"; {tie}" if tie else "")
    if c.badness != chosen.badness:
        return f"badness {c.badness} > {chosen.badness}"
    if c.kind != chosen.kind:
        return "same badness: a cgroup goes before a process"
    if c.kind == "cgroup":
        if c.usage_bytes != chosen.usage_bytes:
            return f"same badness, smaller usage ({_size(c)})"
        return "same badness and usage: the chosen one holds a lower pid"
    if c.rss_kb != chosen.rss_kb:
        return f"same badness, smaller rss ({_size(c)})"
    return "same badness and rss: higher pid"


def _win_reason(chosen: Candidate, beat_cgroups: bool = False) -> str:
    parts = [f"lowest badness ({chosen.badness})"]
    if chosen.kind == "process" and beat_cgroups:
        parts.append("strictly lower than every sibling cgroup")
    return ", ".join(parts)


def _tie_detail(chosen: Candidate, ranked: list[Candidate]) -> str | None:
    """Describe the tie break that decided, if there was one."""
    rivals = [c for c in ranked[1:] if c.badness == chosen.badness and c.kind == chosen.kind]
    if not rivals:
        if any(c.badness == chosen.badness for c in ranked[1:]):
            return "ties with processes of the same badness: a cgroup goes first"
        return None
    if chosen.kind == "cgroup":
        if all(r.usage_bytes == chosen.usage_bytes for r in rivals[:1]):
            return "tie on badness and usage: the one holding the lowest pid"
        return "tie on badness: the largest memory usage"
    if all(r.rss_kb == chosen.rss_kb for r in rivals[:1]):
        return "tie on badness and rss: the lowest pid"
    return "tie on badness: the largest rss"


def _cgroup_candidates(snap: Snapshot, level: CgroupInfo, viable: _Viability) -> list[Candidate]:
    """``level``'s child cgroups as candidates; skipped: badness 1000 and nothing to kill."""
    cands: list[Candidate] = []
    for kid in kids(snap, level):
        skip = None
        if kid.badness >= BADNESS_NEVER:
            skip = "badness 1000: never"
        elif viable.min_pid(kid) is None:
            skip = "nothing killable inside"
        cands.append(Candidate("cgroup", kid.badness, cgroup=kid, skip=skip))
    return cands


def lowest_priority_child(snap: Snapshot, path: CgroupPath) -> CgroupPath | None:
    """The child cgroup of ``path`` that the priority ranking puts first among the child
    cgroups (the daemon's kill-all target when escalation runs out of rounds); None if
    no child holds anything killable."""
    level = snap.cgroups.get(path)
    if level is None:
        return None
    viable = _Viability(snap, frozenset())
    eligible = [c for c in _cgroup_candidates(snap, level, viable) if c.skip is None]
    if not eligible:
        return None
    first = min(eligible, key=lambda c: _rank_key(c, viable)).cgroup
    assert first is not None
    return first.path


def select_priority(snap: Snapshot, oom_root: CgroupPath, exclude: Iterable[int] = ()) -> Decision:
    """The strict-priority victim below ``oom_root``.

    At each level L (starting at the OOM root) the candidates are L's child cgroups and
    the processes attached to L.  The lowest badness dies first; ties among cgroups go
    to the largest usage, among processes to the largest rss, and between a cgroup and
    a process to the cgroup; remaining ties to the lowest pid.  Badness 1000, init,
    kernel threads and cgroups with nothing killable inside are skipped.  A chosen
    cgroup is descended into; a chosen process is the victim.  ``memory.oom.group``
    widens the kill to the highest group between the victim and the OOM root.

    ``exclude``: pids to treat as gone (the next victim after those; the daemon's
    escalation and ``--top``).
    """
    gone = frozenset(exclude)
    viable = _Viability(snap, gone)
    start = snap.cgroups.get(oom_root)
    if start is None:
        return Decision(PRIORITY, oom_root, None, reasons=(f"{oom_root}: not in the snapshot",))
    walk: list[Level] = []
    reasons: list[str] = []
    level = start
    while True:
        cands = _cgroup_candidates(snap, level, viable)
        for p in snap.processes_in(level.path):
            cands.append(Candidate("process", p.badness, process=p, skip=_process_skip(p, gone)))
        eligible = sorted((c for c in cands if c.skip is None), key=lambda c: _rank_key(c, viable))
        skipped = [c for c in cands if c.skip is not None]
        if not eligible:
            walk.append(
                Level(level.path, tuple(_with_note(c, c.skip or "") for c in skipped), None)
            )
            reasons.append(f"{level.path}: no killable candidate")
            return Decision(PRIORITY, oom_root, None, walk=tuple(walk), reasons=tuple(reasons))
        chosen = eligible[0]
        noted = [_with_note(c, _verdict(c, chosen, eligible[1:])) for c in eligible]
        chosen_noted = noted[0]
        walk.append(
            Level(
                level.path,
                tuple(noted + [_with_note(c, c.skip or "") for c in skipped]),
                chosen_noted,
            )
        )
        tie = _tie_detail(chosen, eligible)
        reasons.append(
            f"{level.path}: {len(eligible)} killable of {len(cands)} candidates; "
            f"{chosen.kind} {chosen.name} has the "
            + _win_reason(chosen, any(o.kind == "cgroup" for o in eligible[1:]))
            + (f" ({tie})" if tie else "")
        )
        if chosen.process is not None:
            victim = chosen.process
            group, pids, group_reasons = _victim_group(snap, victim, oom_root)
            return Decision(
                PRIORITY,
                oom_root,
                victim,
                kill_group=group,
                group_pids=pids,
                walk=tuple(walk),
                reasons=tuple(reasons + group_reasons),
            )
        assert chosen.cgroup is not None
        level = chosen.cgroup


def _with_note(c: Candidate, note: str) -> Candidate:
    return Candidate(c.kind, c.badness, c.cgroup, c.process, c.skip, note)


def rank_priority(snap: Snapshot, oom_root: CgroupPath, n: int) -> list[Decision]:
    """The first ``n`` victims in priority order: each one as if the earlier ones (and
    their groups) were already gone."""
    out: list[Decision] = []
    gone: set[int] = set()
    while len(out) < n:
        d = select_priority(snap, oom_root, gone)
        if d.victim is None:
            break
        out.append(d)
        gone.update(d.group_pids or (d.victim.pid,))
    return out


# -- policy "kernel" (mm/oom_kill.c: oom_badness, select_bad_process) ------------------


@dataclass(frozen=True)
class KernelParams:
    """The host-wide values the kernel heuristic needs, read by the caller."""

    page_size: int = 4096
    mem_total_kb: int = 0  # /proc/meminfo MemTotal = totalram_pages
    swap_total_kb: int = 0  # /proc/meminfo SwapTotal = total_swap_pages
    vm_swappiness: int = 60  # v2 and the root memcg use the global value
    oom_kill_allocating_task: bool = False
    version: int = 1  # cgroup version of the snapshot

    @property
    def page_kb(self) -> int:
        return max(self.page_size // 1024, 1)

    @classmethod
    def of(
        cls, snap: Snapshot, vm_swappiness: int | None = None, allocating_task: bool = False
    ) -> KernelParams:
        return cls(
            page_size=snap.page_size,
            mem_total_kb=snap.mem_total_kb,
            swap_total_kb=snap.swap_total_kb,
            vm_swappiness=60 if vm_swappiness is None else vm_swappiness,
            oom_kill_allocating_task=allocating_task,
            version=snap.version,
        )


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
    return p.killable and p.pid != 1 and p.oom_score_adj != OOM_SCORE_ADJ_MIN


def score(p: ProcessInfo, totalpages: int, params: KernelParams, index: int = 0) -> Scored:
    """``oom_badness``: resident + swap + page-table pages, plus
    ``oom_score_adj * (totalpages / 1000)`` (integer division first)."""
    pk = params.page_kb
    rss = p.rss_anon_kb // pk + p.rss_file_kb // pk + p.rss_shmem_kb // pk
    swap = p.swap_kb // pk
    pte = p.pgtables_kb * 1024 // params.page_size
    adj = p.oom_score_adj * (totalpages // 1000)
    return Scored(p, rss + swap + pte + adj, index, rss, swap, pte, adj)


def _c_div(a: int, b: int) -> int:
    """C's truncating integer division."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def proc_oom_score(p: ProcessInfo, params: KernelParams) -> int:
    """What ``/proc/PID/oom_score`` shows on 5.9+ (host totalpages, 0 if ineligible)."""
    if not oom_eligible(p):
        return 0
    total = host_totalpages(params)
    points = score(p, total, params).points
    return _c_div((1000 + _c_div(points * 1000, total)) * 2, 3)


def scan_order(snap: Snapshot, oom_root: CgroupPath) -> Iterator[ProcessInfo]:
    """The processes in the order the kernel scans them (approximated, see
    SCAN_ORDER_*): host OOM by pid; memcg OOM by memcg pre-order (creation order),
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
        return Decision(KERNEL, oom_root, None, reasons=(f"{oom_root}: not in the snapshot",))
    reasons: list[str] = []
    if memcg_oom:
        totalpages = memcg_totalpages(cg, params)
        if cg.limit_bytes is None:
            reasons.append(
                f"{oom_root} has no memory limit, so it cannot run out on its own; "
                f"points use the host's RAM + swap ({totalpages} pages)"
            )
        else:
            reasons.append(
                f"memcg OOM of {oom_root}: totalpages = limit {format_bytes(cg.limit_bytes)}"
                f" + allowed swap = {totalpages} pages, so each oom_score_adj point is worth "
                f"{totalpages // 1000} pages"
            )
    else:
        totalpages = host_totalpages(params)
        reasons.append(
            f"host OOM: totalpages = RAM + swap = {totalpages} pages, so each "
            f"oom_score_adj point is worth {totalpages // 1000} pages"
        )
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
    caveats = [SCAN_ORDER_MEMCG if memcg_oom else SCAN_ORDER_HOST, *KERNEL_CAVEATS]
    if params.oom_kill_allocating_task and not memcg_oom:
        caveats.insert(
            0,
            "vm.oom_kill_allocating_task=1: a host OOM kills whichever task is "
            "allocating, without scoring — this ranking is not used",
        )
    reasons.append(
        f"{len(scored)} candidates scored, {skipped} never eligible (kernel threads, "
        "init, no mm, oom_score_adj -1000)"
    )
    if not scored:
        reasons.append("no killable process: the kernel would report 'no killable processes'")
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
        f"pid {top.process.pid} ({top.process.comm}) has the most points: {top.points} = "
        f"rss {top.rss_pages} + swap {top.swap_pages} + page tables {top.pgtable_pages} "
        f"+ adj {top.adj_pages} pages"
    )
    if len(scored) > 1 and scored[1].points == top.points:
        reasons.append(
            f"tie with pid {scored[1].process.pid} at {top.points} points: the kernel keeps "
            "the one it scans last"
        )
    group, pids, group_reasons = _victim_group(snap, top.process, oom_root)
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
