"""The result of victim selection, shared by both policies and their callers.

:class:`Decision` holds the victim, the group that would die with it
(``memory.oom.group``), the reasoning step by step (the priority walk as
:class:`Level` s of :class:`Candidate` s, or the kernel's ranked :class:`Scored`
processes), and the reasons as data (:mod:`memcgctl.vocab.reasons`: a code and the
numbers) — the words are the rendering layer's (:mod:`memcgctl.render.reasontext`).
The helpers here are the tree steps both policies take: a cgroup's children, and the
group kill that ``memory.oom.group`` widens a victim to.  Nothing here reads a file.
"""

from __future__ import annotations

from memcgctl.logic.oombadness import may_be_chosen
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.model import CgroupInfo, ProcessInfo, Snapshot
from memcgctl.vocab.reasons import Caveat, GroupKill, Reason, Skip, Verdict
from memcgctl.vocab.structs import NamedTuple, dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

PRIORITY = "priority"
KERNEL = "kernel"
POLICIES = (PRIORITY, KERNEL)


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
    # the brief walk: candidates skipped for holding no process and no child cgroup,
    # told by the snapshot's probe alone and not listed (beyond LISTED_EMPTY of them)
    unlisted: int = 0


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
    normalised: bool = False  # kernel before 3.8: points on the 0..1000 scale
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
            if p.killable and may_be_chosen(p.pid, p.oom_score_adj)
        )
    )


def victim_group(
    snap: Snapshot, victim: ProcessInfo, oom_root: CgroupPath
) -> tuple[CgroupPath | None, tuple[int, ...], list[Reason]]:
    group = oom_group_of(snap, victim, oom_root)
    if group is None:
        return None, (victim.pid,), []
    pids = group_kill_pids(snap, group)
    if victim.pid not in pids:
        pids = tuple(sorted((*pids, victim.pid)))
    return group, pids, [GroupKill(group, len(pids))]
