"""The notification fds of the managed cgroups: v1 ``memory.oom_control`` eventfds, v2
``memory.events`` watches and the host's PSI trigger.  :class:`Watches` is the part of
the real ports (``daemon/ports.py``) that holds them, tells the loop which fds to poll
and for what, and reads what woke it.
"""

from __future__ import annotations

import select
from collections.abc import Iterator, Mapping

from memcgctl.daemon.protocol import KERNEL_LOG, Feed, Wake
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.notify import EventsFileWatch, OomControlWatch, PsiTrigger
from memcgctl.vocab.cgpath import HostScope, Scope
from memcgctl.vocab.errors import Vanished

Notifier = OomControlWatch | PsiTrigger | EventsFileWatch
_VALVE_EVENTS = ("high", "max", "oom")


class Watches(Mapping[Scope, list[Notifier]]):
    """cgroup -> its notification fds.  The fd index the loop polls is rebuilt only when
    the set changed (or the kernel log's fd did), not on every wake-up."""

    def __init__(self, fs: CgroupFs) -> None:
        self.fs = fs
        self._by_cg: dict[Scope, list[Notifier]] = {}
        self._version = 0
        self._index: tuple[
            tuple[int, int], dict[int, tuple[Scope, Notifier]], dict[int, Scope | Feed]
        ] = ((-1, -1), {}, {})

    def __getitem__(self, cg: Scope) -> list[Notifier]:
        return self._by_cg[cg]

    def __iter__(self) -> Iterator[Scope]:
        return iter(self._by_cg)

    def __len__(self) -> int:
        return len(self._by_cg)

    def add(self, cg: Scope, notifiers: list[Notifier]) -> None:
        self._version += 1
        self._by_cg[cg] = notifiers

    def close(self, cg: Scope) -> None:
        """Close cg's fds and forget them."""
        notifiers = self._by_cg.pop(cg, None)
        if notifiers is None:
            return
        self._version += 1
        for w in notifiers:
            w.close()

    def close_all(self) -> None:
        for cg in list(self._by_cg):
            self.close(cg)

    def _indexed(
        self, klog: int
    ) -> tuple[dict[int, tuple[Scope, Notifier]], dict[int, Scope | Feed]]:
        """fd -> (cgroup, watch), and the loop's fd -> cgroup map (``klog``, the kernel
        log's fd or -1, maps to KERNEL_LOG): O(1) per fd on a wake-up."""
        key = (self._version, klog)
        if self._index[0] != key:
            by_fd = {w.fileno(): (cg, w) for cg, ws in self._by_cg.items() for w in ws}
            by_fd.pop(-1, None)
            out: dict[int, Scope | Feed] = {fd: cg for fd, (cg, _) in by_fd.items()}
            if klog >= 0:
                out[klog] = KERNEL_LOG
            self._index = (key, by_fd, out)
        return self._index[1], self._index[2]

    def fds(self, klog: int) -> dict[int, Scope | Feed]:
        """fd -> the cgroup it notifies about (KERNEL_LOG for the kernel log's fd
        ``klog``); the same object while the set is unchanged."""
        return self._indexed(klog)[1]

    def poll_events(self, fd: int, klog: int) -> int:
        """The poll mask to wait for on fd: POLLIN for a v1 eventfd (and the kernel log);
        POLLPRI only for PSI triggers and memory.events, whose poll() always reports
        POLLIN (the kernel's DEFAULT_POLLMASK) and signals with POLLPRI."""
        found = self._indexed(klog)[0].get(fd)
        if found is not None:
            return select.POLLIN if isinstance(found[1], OomControlWatch) else select.POLLPRI
        if klog >= 0 and fd == klog:
            return select.POLLIN
        return select.POLLPRI

    def consume(self, cg: Scope, fd: int, error: bool, klog: int) -> Wake:
        """Read what woke us on fd: FIRED (look at cg now), QUIET (nothing that
        matters, e.g. another memory.events counter), or GONE (cgroup removed)."""
        found = self._indexed(klog)[0].get(fd)
        for w in [found[1]] if found is not None and found[0] == cg else []:
            if isinstance(w, OomControlWatch):
                # v1 also fires once when the cgroup is removed
                if w.drain() == 0:
                    return Wake.QUIET
                exists = isinstance(cg, HostScope) or self.fs.exists(cg)
                return Wake.FIRED if exists else Wake.GONE
            if isinstance(w, EventsFileWatch):
                # kernfs wakes with POLLPRI|POLLERR on every change: compare counters
                try:
                    values = w.read()
                except Vanished:
                    return Wake.GONE
                old, w.values = w.values, values
                grew = any(values.get(k, 0) > old.get(k, 0) for k in _VALVE_EVENTS)
                return Wake.FIRED if grew else Wake.QUIET
            gone = error and not isinstance(cg, HostScope)  # PSI: POLLERR
            return Wake.GONE if gone else Wake.FIRED
        return Wake.QUIET
