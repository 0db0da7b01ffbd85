"""What the daemon's core and loop exchange with the world, typed: the :class:`CorePorts`
protocol (real: ``daemon/ports.py``; tests: a fake; the loop's own protocol is
:class:`~memcgctl.daemon.loop.LoopPorts`), and the answers the ports give: a
:class:`Managed` (in a :class:`Mode`) on taking a memcg over, a :class:`Reading` (an
:class:`~memcgctl.daemon.valve.OomLevel`) on looking at it, a :class:`Wake` on reading
what woke the loop, and :data:`KERNEL_LOG`, the fd that notifies about no cgroup.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from enum import Enum

from memcgctl.daemon.valve import OomLevel
from memcgctl.logic.decision import Decision
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.model import Snapshot
from memcgctl.vocab.records import DaemonRecord
from memcgctl.vocab.structs import NamedTuple, Protocol


class Mode(Enum):
    """How a managed memcg is held; records and the status file print the value."""

    OOM = "oom"  # v1: oom_kill_disable=1, an OOM pauses the memcg
    VALVE = "valve"  # v2: memory.high below memory.max on its OOM domain
    HOST = "host"  # the machine: MemAvailable and a PSI trigger


class Reading(NamedTuple):
    state: OomLevel
    poll: float | None = None  # look again after this many seconds (None: on notification)
    # near the short line: the core keeps a standing plan (a victim chosen ahead) fresh
    near: bool = False
    # not near, but growing towards it: look again after this many seconds (None: at
    # the next rescan or notification)
    soon: float | None = None


class Managed(NamedTuple):
    mode: Mode
    domain: CgroupPath  # the OOM root victims are chosen in (where the limit is)


class Wake(Enum):
    """What woke the loop on a cgroup's fd."""

    FIRED = "fired"  # look at the cgroup now
    QUIET = "quiet"  # nothing that matters (e.g. another memory.events counter)
    GONE = "gone"  # the cgroup was removed: rescan


class Feed(Enum):
    """An fd the loop polls that notifies about no cgroup."""

    KERNEL_LOG = "kernel log"


KERNEL_LOG = Feed.KERNEL_LOG


class CorePorts(Protocol):
    """What the core needs from the world."""

    def managed(self) -> dict[Scope, int]:
        """Every memcg with an OOM delay (ms), including the host (HOST) if asked."""

    def take_over(self, cg: Scope) -> Managed | None:
        """Start managing cg (v1: oom_kill_disable=1 + eventfd; v2: the valve on its
        OOM domain; host: meminfo + a PSI trigger).  None when it cannot be managed."""

    def release(self, cg: Scope) -> None:
        """Stop managing cg and restore what take_over changed."""

    def level(self, cg: Scope) -> Reading:
        """How close cg's OOM domain is to an OOM right now."""

    def arm_near(self, cg: Scope, on: bool) -> None:
        """v2: whether cg's valve steps down while far from it, so that the kernel's
        ``high`` event says the domain is near (the core chooses ahead there); a no-op
        elsewhere."""

    def at_limit(self, cg: Scope) -> bool:
        """v1: the memcg's own usage is at its limit (its own OOM, not an ancestor's)."""

    def freeze(self, cg: Scope, frozen: bool) -> bool:
        """v2: freeze (or thaw) cg's OOM domain; False when it cannot be done."""

    def snapshot(self, cg: CgroupPath, budget: int | None = None) -> Snapshot:
        """A fresh snapshot of cg's subtree; ``budget``: looking at more cgroups than
        that raises :class:`~memcgctl.vocab.errors.OverBudget` (a lazy snapshot)."""

    def plan_mark(self, domain: CgroupPath) -> Hashable | None:
        """What changes whenever a cgroup is made or removed in ``domain``, or one's
        xattrs or owner change (the tree watch's mark); None: it cannot be told."""

    def plan_stamp(self, decision: Decision) -> Hashable | None:
        """What a standing plan rests on, read when it is chosen (the tree watch's mark
        for the domain, the processes of the cgroups the walk compared).  None: it
        cannot be told (no tree watch): no plan is kept."""

    def plan_holds(self, decision: Decision, stamp: Hashable) -> bool:
        """Read again at the event: the plan still holds (nothing it rests on changed
        but for processes gone and kernel threads come, its victim still in its
        cgroup)."""

    def kill(self, decision: Decision) -> list[int]:
        """Kill the decision's victim (or its whole oom.group); the pids signalled."""

    def kill_all(self, cg: CgroupPath) -> list[int]:
        """Kill every task below cg; the pids signalled."""

    def alive(self, pids: Iterable[int]) -> list[int]:
        """Those of pids that have not exited yet."""

    def emit(self, event: DaemonRecord) -> None:
        """Report a decision (stderr log, journal)."""

    def hold_records(self, on: bool) -> None:
        """Hold what is emitted (and journaled by a kill) back while a victim exits
        (on); write it all, in order, when off."""

    def exited(self, pids: Iterable[int]) -> bool:
        """Every one of pids has exited (the pidfd taken for its signal fired), or was
        never held by one."""

    def reap(self, pids: list[int]) -> None:
        """Give the memory of those of pids still exiting back now (process_mrelease):
        they did not exit within the quiet after their signal."""
