"""Victim selection: pure functions over a :class:`~memcgctl.vocab.model.Snapshot`.

Two policies, one function each, shared by ``predict-victim`` and the daemon:

* :func:`select_priority` — memcgctl's strict-priority walk;
* :func:`select_kernel` — the stock kernel heuristic of ``mm/oom_kill.c``,
  reproduced as exactly as userspace allows.

Nothing here reads a file: every input is in the snapshot or passed as a plain value
(:class:`KernelParams`).  The result is a frozen :class:`Decision` with the victim, the
group that would die with it (``memory.oom.group``), the reasoning step by step (the
priority walk, or the kernel's ranked candidates), and the reasons as data
(:mod:`memcgctl.vocab.reasons`: a code and the numbers) — the words are the rendering layer's
(:mod:`memcgctl.render.reasontext`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.model import BADNESS_NEVER, CgroupInfo, KernelParams, ProcessInfo, Snapshot
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
    PointsTie,
    Reason,
    ScoredCount,
    Skip,
    Tie,
    Verdict,
    Win,
)

OOM_SCORE_ADJ_MIN = -1000

PRIORITY = "priority"
KERNEL = "kernel"
POLICIES = (PRIORITY, KERNEL)

# Where userspace cannot be exact (README "predict-victim"); shown by --explain.
KERNEL_CAVEATS = (
    Caveat.RSS_APPROXIMATE,
    Caveat.SHARED_MM,
    Caveat.VICTIM_EXITING,
    Caveat.TASK_ORIGIN,
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
    # None if eligible; else why it can never be chosen (badness 1000, ...)
    skip: Skip | None = None
    # Why it was taken, or why it lost to the chosen one (or the skip again).
    verdict: Verdict = field(default_factory=Verdict)

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
    reasons: tuple[Reason, ...] = ()  # the decision step by step, in order
    caveats: tuple[Caveat, ...] = field(default=())  # where the prediction may be wrong


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
) -> tuple[CgroupPath | None, tuple[int, ...], list[Reason]]:
    group = oom_group_of(snap, victim, oom_root)
    if group is None:
        return None, (victim.pid,), []
    pids = group_kill_pids(snap, group)
    if victim.pid not in pids:
        pids = tuple(sorted((*pids, victim.pid)))
    return group, pids, [GroupKill(group, len(pids))]


# -- policy "priority" ---------------------------------------------------------------


def _process_skip(p: ProcessInfo, exclude: frozenset[int]) -> Skip | None:
    if p.pid in exclude:
        return Skip.ALREADY_CHOSEN
    if not p.killable:
        return Skip.INIT if p.pid == 1 else Skip.NO_MEMORY
    if p.badness >= BADNESS_NEVER:
        if p.badness_source == "oom_score_adj":
            return Skip.ADJ_NEVER
        return Skip.BADNESS_NEVER
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


def _verdict(c: Candidate, chosen: Candidate, others: list[Candidate]) -> Verdict:
    """Why ``c`` lost to ``chosen`` (or, for ``chosen`` itself, why it won against
    ``others``, the other eligible candidates)."""
    if c is chosen:
        if not others:
            return Verdict(only=True)
        return Verdict(win=_win(chosen, [chosen, *others]))
    if c.badness != chosen.badness:
        return Verdict(lost=Lost.HIGHER_BADNESS, badness=c.badness, chosen_badness=chosen.badness)
    if c.kind != chosen.kind:
        return Verdict(lost=Lost.CGROUP_FIRST)
    if c.kind == "cgroup":
        if c.usage_bytes != chosen.usage_bytes:
            return Verdict(lost=Lost.SMALLER_USAGE, usage_bytes=c.usage_bytes)
        return Verdict(lost=Lost.HIGHER_PID_INSIDE)
    if c.rss_kb != chosen.rss_kb:
        return Verdict(lost=Lost.SMALLER_RSS, rss_kb=c.rss_kb)
    return Verdict(lost=Lost.HIGHER_PID)


def _win(chosen: Candidate, ranked: list[Candidate]) -> Win:
    """The lowest badness; for a process, whether it beat sibling cgroups; the tie
    break that decided, if there was one."""
    beat = chosen.kind == "process" and any(o.kind == "cgroup" for o in ranked[1:])
    return Win(chosen.badness, beat, _tie(chosen, ranked))


def _tie(chosen: Candidate, ranked: list[Candidate]) -> Tie | None:
    rivals = [c for c in ranked[1:] if c.badness == chosen.badness and c.kind == chosen.kind]
    if not rivals:
        if any(c.badness == chosen.badness for c in ranked[1:]):
            return Tie.CGROUP_BEFORE_PROCESS
        return None
    if chosen.kind == "cgroup":
        if all(r.usage_bytes == chosen.usage_bytes for r in rivals[:1]):
            return Tie.LOWEST_PID_INSIDE
        return Tie.LARGEST_USAGE
    if all(r.rss_kb == chosen.rss_kb for r in rivals[:1]):
        return Tie.LOWEST_PID
    return Tie.LARGEST_RSS


def _cgroup_candidates(snap: Snapshot, level: CgroupInfo, viable: _Viability) -> list[Candidate]:
    """``level``'s child cgroups as candidates; skipped: badness 1000 and nothing to kill."""
    cands: list[Candidate] = []
    for kid in kids(snap, level):
        skip = None
        if kid.badness >= BADNESS_NEVER:
            skip = Skip.BADNESS_NEVER
        elif viable.min_pid(kid) is None:
            skip = Skip.NOTHING_INSIDE
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
        return Decision(PRIORITY, oom_root, None, reasons=(NotInSnapshot(oom_root),))
    walk: list[Level] = []
    reasons: list[Reason] = []
    level = start
    while True:
        cands = _cgroup_candidates(snap, level, viable)
        for p in snap.processes_in(level.path):
            cands.append(Candidate("process", p.badness, process=p, skip=_process_skip(p, gone)))
        eligible = sorted((c for c in cands if c.skip is None), key=lambda c: _rank_key(c, viable))
        skipped = [c for c in cands if c.skip is not None]
        if not eligible:
            walk.append(Level(level.path, tuple(_skipped(c) for c in skipped), None))
            reasons.append(NoKillableAt(level.path))
            return Decision(PRIORITY, oom_root, None, walk=tuple(walk), reasons=tuple(reasons))
        chosen = eligible[0]
        noted = [_with_verdict(c, _verdict(c, chosen, eligible[1:])) for c in eligible]
        chosen_noted = noted[0]
        walk.append(Level(level.path, tuple(noted + [_skipped(c) for c in skipped]), chosen_noted))
        reasons.append(
            LevelChoice(
                level.path,
                len(eligible),
                len(cands),
                chosen.kind,
                chosen.cgroup.path if chosen.cgroup is not None else None,
                chosen.process.pid if chosen.process is not None else None,
                chosen.process.comm if chosen.process is not None else None,
                _win(chosen, eligible),
            )
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


def _with_verdict(c: Candidate, verdict: Verdict) -> Candidate:
    return Candidate(c.kind, c.badness, c.cgroup, c.process, c.skip, verdict)


def _skipped(c: Candidate) -> Candidate:
    return _with_verdict(c, Verdict(skip=c.skip))


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
