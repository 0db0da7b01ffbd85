"""What the daemon's core needs from the world: the :class:`Ports` protocol (real:
``daemon/ports.py``; tests: a fake), and the answers the ports give, a
:class:`Managed` on taking a memcg over and a :class:`Level` on looking at it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from memcgctl.logic.decision import Decision
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.model import Snapshot
from memcgctl.vocab.records import DaemonRecord


class Level(NamedTuple):
    state: str  # valve.CLEAR, RECOVERED, SHORT or CRITICAL
    poll: float | None = None  # look again after this many seconds (None: on notification)


class Managed(NamedTuple):
    mode: str  # "oom" (v1), "valve" (v2), "host"
    domain: CgroupPath  # the OOM root victims are chosen in (where the limit is)


class Ports(Protocol):
    """What the core needs from the world."""

    def managed(self) -> dict[Scope, int]:
        """Every memcg with an OOM delay (ms), including the host (HOST) if asked."""

    def take_over(self, cg: Scope) -> Managed | None:
        """Start managing cg (v1: oom_kill_disable=1 + eventfd; v2: the valve on its
        OOM domain; host: meminfo + a PSI trigger).  None when it cannot be managed."""

    def release(self, cg: Scope) -> None:
        """Stop managing cg and restore what take_over changed."""

    def level(self, cg: Scope) -> Level:
        """How close cg's OOM domain is to an OOM right now."""

    def at_limit(self, cg: Scope) -> bool:
        """v1: the memcg's own usage is at its limit (its own OOM, not an ancestor's)."""

    def freeze(self, cg: Scope, frozen: bool) -> bool:
        """v2: freeze (or thaw) cg's OOM domain; False when it cannot be done."""

    def snapshot(self, cg: CgroupPath) -> Snapshot:
        """A fresh snapshot of cg's subtree."""

    def kill(self, decision: Decision) -> list[int]:
        """Kill the decision's victim (or its whole oom.group); the pids signalled."""

    def kill_all(self, cg: CgroupPath) -> list[int]:
        """Kill every task below cg; the pids signalled."""

    def alive(self, pids: Iterable[int]) -> list[int]:
        """Those of pids that have not exited yet."""

    def emit(self, event: DaemonRecord) -> None:
        """Report a decision (stderr log, journal)."""
