"""The immutable snapshot: memcgs (a tree) and processes, as the kernel layer read them.

Policy, rendering, events and the daemon only ever see these objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.constants import BADNESS_DEFAULT, BADNESS_MIN, BADNESS_NEVER
from memcgctl.vocab.structs import NamedTuple, dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "BADNESS_DEFAULT",
    "BADNESS_MIN",
    "BADNESS_NEVER",
    "CgroupInfo",
    "ProcessInfo",
    "Snapshot",
]

_EMPTY: Mapping[str, int] = MappingProxyType({})


class ProcessInfo(NamedTuple):
    """One process.  A NamedTuple rather than a frozen dataclass: a host-wide snapshot
    builds thousands of these, and tuples are several times cheaper to build."""

    pid: int
    comm: str
    cgroup: CgroupPath
    uid: int
    rss_anon_kb: int
    rss_file_kb: int
    rss_shmem_kb: int
    swap_kb: int
    pgtables_kb: int
    oom_score_adj: int
    badness: int
    badness_source: str  # process | rule | inherited | oom_score_adj | default
    # False for kernel threads, zombies (no mm) and the host's init
    killable: bool
    oom_score: int | None = None
    # where an inherited or rule badness came from: the ancestor's pid, the rule's name
    badness_from: int | str | None = None

    @property
    def rss_kb(self) -> int:
        return self.rss_anon_kb + self.rss_file_kb + self.rss_shmem_kb

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "comm": self.comm,
            "cgroup": self.cgroup,
            "rss_kb": self.rss_kb,
            "swap_kb": self.swap_kb,
            "pgtables_kb": self.pgtables_kb,
            "badness": self.badness,
            "badness_source": self.badness_source,
            "badness_from": self.badness_from,
            "oom_score_adj": self.oom_score_adj,
            "oom_score": self.oom_score,
            "uid": self.uid,
            "killable": self.killable,
        }


@dataclass(frozen=True, slots=True)
class CgroupInfo:
    path: CgroupPath
    usage_bytes: int | None
    limit_bytes: int | None  # None = unlimited
    badness: int
    badness_source: str  # trusted | user | default
    oom_delay_ms: int | None  # None = off
    oom_delay_source: str
    oom_group: bool | None  # None where the hierarchy has no memory.oom.group (v1)
    under_oom: bool | None  # v1 only
    oom_kill_disable: bool | None  # v1 only
    pids: tuple[int, ...]
    children: tuple[CgroupPath, ...]
    # read for a snapshot's root only (the OOM root, whose totalpages the kernel
    # heuristic computes); None below it
    swap_limit_bytes: int | None = None
    swappiness: int | None = None
    # The directory's inode number.  cgroupfs (kernfs) allocates them increasing, so it
    # tracks creation order: the order the kernel's css iterator visits siblings in.
    ino: int = 0
    # v1: memory.oom_control; v2: memory.events (hierarchical) and memory.events.local
    events: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    events_local: Mapping[str, int] = field(default_factory=lambda: _EMPTY)
    # The Kubernetes pod ("namespace/name") the cgroup belongs to: the label
    # `memcgctl kube` wrote on it or on its nearest labelled ancestor; None: not known.
    pod: str | None = None
    # the rule (memcgctl apply, the daemon) that wrote the trusted badness, if one did
    badness_rule: str | None = None

    @property
    def nr_tasks(self) -> int:
        return len(self.pids)

    @property
    def oom_kills_local(self) -> int | None:
        """Tasks of this very cgroup killed by the OOM killer (kernel counter)."""
        if "oom_kill" in self.events_local:
            return self.events_local["oom_kill"]
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "cgroup": self.path,
            "usage_bytes": self.usage_bytes,
            "limit_bytes": self.limit_bytes,
            "badness": self.badness,
            "badness_source": self.badness_source,
            "oom_delay_ms": self.oom_delay_ms,
            "oom_group": self.oom_group,
            "under_oom": self.under_oom,
            "oom_kill_disable": self.oom_kill_disable,
            "oom_kills_local": self.oom_kills_local,
            "nr_tasks": self.nr_tasks,
            "pod": self.pod,
            "badness_rule": self.badness_rule,
        }


@dataclass(frozen=True)
class Snapshot:
    """Everything memcgctl knows at one moment, below ``root``."""

    version: int
    root: CgroupPath
    cgroups: Mapping[CgroupPath, CgroupInfo]
    processes: Mapping[int, ProcessInfo]
    mem_total_kb: int = 0
    swap_total_kb: int = 0
    page_size: int = 4096
    kernel_release: str = ""
    # A cgroup's badness and its source without reading the rest of it (a lazy
    # snapshot: one getxattr or two); None where the cgroup is gone.  The priority walk
    # ranks a level's children by it and reads in full only those it compares.  Absent
    # (None): the badness comes from ``cgroups``.
    badness_probe: Callable[[CgroupPath], tuple[int, str] | None] | None = field(
        default=None, compare=False, repr=False
    )

    # The same for its usage (one file read): the walk ranks the children of the
    # lowest badness by it and reads in full only those it looks into.
    usage_probe: Callable[[CgroupPath], int | None] | None = field(
        default=None, compare=False, repr=False
    )

    # Whether a cgroup holds no process and no child cgroup, without reading the rest
    # of it (a lazy snapshot: its directory's link count and its cgroup.procs); None
    # where it is gone.  The brief walk skips a tenant's thousands of empty cgroups
    # ranked first by it (issue 22).  Absent (None): from ``cgroups``.
    empty_probe: Callable[[CgroupPath], bool | None] | None = field(
        default=None, compare=False, repr=False
    )

    def holds_nothing(self, path: CgroupPath) -> bool:
        """Cgroup ``path`` is in the snapshot and holds no process and no child cgroup
        (nothing to kill in it, for any policy)."""
        if self.empty_probe is not None:
            return self.empty_probe(path) is True
        cg = self.cgroups.get(path)
        return cg is not None and not cg.pids and not cg.children

    def badness_of(self, path: CgroupPath) -> tuple[int, str] | None:
        """(badness, source) of cgroup ``path``; None if it is not in the snapshot."""
        if self.badness_probe is not None:
            return self.badness_probe(path)
        cg = self.cgroups.get(path)
        return (cg.badness, cg.badness_source) if cg is not None else None

    def usage_of(self, path: CgroupPath) -> int | None:
        """Cgroup ``path``'s usage in bytes (0 where unknown); None if it is not in the
        snapshot."""
        if self.usage_probe is not None:
            return self.usage_probe(path)
        cg = self.cgroups.get(path)
        return (cg.usage_bytes or 0) if cg is not None else None

    def walk(self, path: CgroupPath | None = None) -> Iterator[CgroupInfo]:
        """Pre-order, children sorted by name (the order the snapshot was read in)."""
        start = self.cgroups.get(path if path is not None else self.root)
        if start is None:
            return
        stack = [start]
        while stack:
            cg = stack.pop()
            yield cg
            stack.extend(self.cgroups[c] for c in reversed(cg.children) if c in self.cgroups)

    def processes_in(self, path: CgroupPath) -> list[ProcessInfo]:
        """Processes attached directly to ``path``."""
        cg = self.cgroups.get(path)
        if cg is None:
            return []
        return [self.processes[p] for p in cg.pids if p in self.processes]

    def pod_of(self, path: CgroupPath) -> str | None:
        """The pod ("namespace/name") cgroup ``path`` belongs to, where known."""
        cg = self.cgroups.get(path)
        return cg.pod if cg is not None else None

    def subtree_processes(self, path: CgroupPath) -> list[ProcessInfo]:
        return [p for cg in self.walk(path) for p in self.processes_in(cg.path)]


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
