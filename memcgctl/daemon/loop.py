"""The thin loop around :class:`~memcgctl.daemon.core.DaemonCore`: poll every
notification fd, feed the core, sleep until its next deadline, rescan now and then.

It sees the core and the world only through two protocols, :class:`Core` and
:class:`LoopPorts` (real: :class:`~memcgctl.daemon.ports.RealPorts`), so tests drive it
with fakes and real pipes."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable

from memcgctl.daemon.protocol import KERNEL_LOG, Feed, Wake
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.model import ProcessInfo
from memcgctl.vocab.structs import Protocol


class Core(Protocol):
    """What the loop drives (:class:`~memcgctl.daemon.core.DaemonCore`)."""

    def rescan(self, now: float, starting: bool = False) -> None:
        """Take over new managed memcgs, release those that are no longer."""

    def tick(self, now: float) -> float | None:
        """Act on what is due; the next deadline (None: only a notification)."""

    def notify(self, cg: Scope, now: float) -> None:
        """A notification fd of cg fired."""

    def kernel_killed(self, domain: CgroupPath, victim: ProcessInfo) -> None:
        """The kernel log reported an OOM kill in domain."""

    def release_all(self) -> None:
        """Release every managed memcg (on the way out)."""

    def fault(self, where: str, cg: Scope | None, exc: BaseException) -> None:
        """Report an unexpected error the loop caught (it carries on)."""

    def busy(self) -> bool:
        """An episode is under way: a whole-tree walk waits."""


class LoopPorts(Protocol):
    """What the loop needs from the world, beside what the core needs from it
    (:class:`~memcgctl.daemon.protocol.CorePorts`): the fds to wait on and what to wait for on
    each, what woke it, the kernel log's kills, and the start and end of a run."""

    def open_kernel_log(self) -> None:
        """Start following the kernel log (its fd then shows in :meth:`fds`)."""

    def release_orphans(self) -> list[CgroupPath]:
        """At start, after the first rescan: release what dead instances left held."""

    def fds(self) -> dict[int, Scope | Feed]:
        """fd -> the memcg or host it notifies about (KERNEL_LOG for the kernel log).
        The same object as long as the set is unchanged: the loop registers the fds
        again only when it gets a new one."""

    def poll_events(self, fd: int) -> int:
        """The poll mask to wait for on fd.  It must not include an event the fd always
        reports (POLLIN on a cgroup file or PSI trigger), or the loop never sleeps."""

    def consume(self, cg: Scope, fd: int, error: bool) -> Wake:
        """Read what woke the loop on fd."""

    def kernel_kills(self) -> list[tuple[CgroupPath, ProcessInfo]]:
        """(OOM domain, victim) of every kernel OOM kill logged since the last call."""

    def exit_fds(self) -> list[int]:
        """The pidfds of the victims still exiting: the loop wakes when one fires (the
        core then writes the kill's records and looks again)."""

    def close_all(self) -> None:
        """Close every fd (on the way out)."""


class TreeEvents(Protocol):
    """The tree watch (:class:`~memcgctl.daemon.treewatch.TreeWatch`): an fd that says
    the cgroup tree or a managed memcg's limits changed, so the loop rescans now."""

    def fileno(self) -> int:
        """-1: none; otherwise the same fd for the loop's whole run."""

    def pump(self) -> bool:
        """Read what woke the loop; True: rescan."""

    # a batch read outside the loop (a plan's mark) wanted a rescan: the loop's next turn
    stashed: bool

    def wants_rescan(self) -> bool:
        """After a rescan: True to rescan again soon (a cgroup was re-created)."""

    def walk_due(self) -> bool:
        """True: the next rescan walks the whole tree (the safety net, or no watches)."""


TREE_SETTLE_S = 0.05  # event-driven rescans at most this often (a churn is coalesced)
FAULT_PAUSE_S = 0.1  # after an unexpected error in the loop itself: no busy spin
# a periodic rescan due this close to another wake-up (a host poll, a beat) is done on
# it, this much early or late at most (and a quarter of the interval), not on one of its
# own a moment before or after.  0.5 s: the window (1 s) is as wide as the host's slowest
# look, so the 2 s rescan always rides on one (issue 22: at 0.25 s, looks every 0.57 s
# at 69 % used left every other rescan a wake-up of its own)
RESCAN_EARLY_S = 0.5
# while an episode is under way a rescan that walks the whole tree waits, this long at
# most since the last one: measured in the v2 guest with 5,000 cgroups walked per rescan
# (no inotify watches left), a walk during an unthrottled host OOM stalled the loop for
# 2.4-2.8 s (the daemon's own allocations in reclaim) and the guardian took it for a hang
BUSY_RESCAN_S = 10.0


class Loop:
    def __init__(
        self,
        core: Core,
        ports: LoopPorts,
        rescan_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        before_rescan: Callable[[bool], object] | None = None,
        tree: TreeEvents | None = None,
        pulse_due: Callable[[], float | None] | None = None,
        pulse_slack: float = 0.0,
    ) -> None:
        self.core = core
        self.tree = tree  # inotify on the tree: rescans when it changed (daemon/treewatch.py)
        self._tree_fd = tree.fileno() if tree is not None else -1
        self._last_rescan = float("-inf")
        self._again = False
        # called before each rescan; True after a SIGHUP (the rules: daemon/rulesync.py)
        self.before_rescan = before_rescan
        self.hup = False
        self.ports = ports
        self.rescan_interval = rescan_interval
        # when the next pulse is due (the clock's time; daemon/watchdog.py): the loop sleeps
        # no longer, and pulses on any wake-up it has before that (no timer of its own)
        self.pulse_due = pulse_due
        self.pulse_slack = pulse_slack  # late by this much at most to ride on another wake
        self.clock = clock
        self.stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._fds: dict[int, Scope | Feed] | None = None
        self._poller = select.poll()
        self._in_urgent = False

    def stop(self) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        signal.signal(signal.SIGHUP, lambda *_: self._hangup())

    def _hangup(self) -> None:
        """SIGHUP: reload (the rules) at the next turn of the loop, now."""
        self.hup = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"h")

    def _rescan(self, now: float, starting: bool = False) -> None:
        if self.before_rescan is not None:
            hup, self.hup = self.hup, False
            self.before_rescan(hup)
        self._last_rescan = now
        self.core.rescan(now, starting=starting)
        self._again = self.tree is not None and self.tree.wants_rescan()

    def _rescan_due(self, now: float) -> None:
        """The next periodic rescan; soon when the last one asked for another."""
        self._next_rescan = now + (TREE_SETTLE_S if self._again else self.rescan_interval)
        self._again = False

    def _early(self) -> float:
        """How early the next rescan may run: only a periodic one (not one a tree event
        or the last rescan asked for at TREE_SETTLE_S: the churn stays coalesced)."""
        if self._next_rescan - self._last_rescan < self.rescan_interval:
            return 0.0
        return min(RESCAN_EARLY_S, self.rescan_interval / 4)

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        self.ports.open_kernel_log()
        now = self.clock()
        self._guard("rescan", lambda: self._rescan(now, starting=True))
        # the walk for orphaned marks pulses: urgent() serves what fires meanwhile
        self._guard("register", self._register)
        self._guard("release_orphans", self.ports.release_orphans)
        self._rescan_due(now)
        self._fds = None
        self._poller = select.poll()
        try:
            while not self.stopping and not until():
                try:
                    self._once()
                except Exception as exc:  # never die of one bad wake-up
                    self.core.fault("loop", None, exc)
                    self._fds = None  # register everything again
                    self._pause(FAULT_PAUSE_S)
        finally:
            self.core.release_all()
            self.ports.close_all()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def urgent(self) -> None:
        """Called between two steps of a long rescan walk (the ports' pulse): handle
        the memcgs' notifications that arrived meanwhile and act on what is due, so a
        walk of thousands of cgroups never holds a kill back (issue 22: an OOM that
        came during a 250 ms rescan waited for it).  Safe there: the walk comes
        before the rescan changes anything.  The kernel log waits for the loop."""
        if self._fds is None or self._in_urgent or self.stopping:
            return
        self._in_urgent = True
        try:
            fds = self._fds
            for fd, mask in self._poller.poll(0):
                cg = fds.get(fd)
                if cg is None or isinstance(cg, Feed):
                    continue
                error = bool(mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL))
                # gone: the rescan under way (or the next) lets the memcg go
                if self.ports.consume(cg, fd, error) is Wake.FIRED:
                    self.core.notify(cg, self.clock())
            self.core.tick(self.clock())
        except Exception as exc:  # the walk goes on; the loop reports what failed
            self.core.fault("urgent", None, exc)
        finally:
            self._in_urgent = False

    def _guard(self, where: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:
            self.core.fault(where, None, exc)

    def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on stop()."""
        with contextlib.suppress(OSError):
            select.select([self._wake_r], [], [], seconds)

    def _register(self) -> dict[int, Scope | Feed]:
        """The fds to poll; registered with the poller only when the set changed."""
        fds = self.ports.fds()
        if fds is not self._fds:
            poller = select.poll()
            poller.register(self._wake_r, select.POLLIN)
            if self._tree_fd >= 0:
                poller.register(self._tree_fd, select.POLLIN)
            for fd in fds:
                poller.register(fd, self.ports.poll_events(fd))
            self._poller, self._fds = poller, fds
        return fds

    def _once(self) -> None:
        now = self.clock()
        deadline = self.core.tick(now)
        if self.tree is not None and self.tree.stashed:
            self._tree_changed()  # read while choosing ahead (TreeWatch.mark)
        now = self.clock()
        walk_waits = not self.hup and self._walk_waits(now)
        if (now >= self._next_rescan - self._early() or self.hup) and not walk_waits:
            self._rescan(now)
            now = self.clock()
            self._rescan_due(now)
        rescan_at = self._next_rescan
        if walk_waits:
            rescan_at = max(rescan_at, self._last_rescan + BUSY_RESCAN_S)
        if deadline is not None and rescan_at <= deadline <= rescan_at + self._early():
            rescan_at = deadline  # a moment late, on the wake-up the core wants anyway
        wake = rescan_at if deadline is None else min(deadline, rescan_at)
        pulse = self.pulse_due() if self.pulse_due is not None else None
        if pulse is not None and wake - pulse > self.pulse_slack:
            # a wake-up of its own only when no other comes soon enough (a rescan drifts
            # by its own length past a beat due at the same time)
            wake = pulse
        timeout_ms = max(0, int((wake - now) * 1000) + 1)
        fds = self._register()
        poller, exits = self._poller, self.ports.exit_fds()
        for fd in exits:
            poller.register(fd, select.POLLIN)
        try:
            ready = poller.poll(timeout_ms)
        finally:
            for fd in exits:
                with contextlib.suppress(KeyError):
                    poller.unregister(fd)
        for fd, mask in ready:
            if fd in exits:
                continue  # a victim exited: the next tick writes and looks (the core)
            if fd == self._wake_r:
                with contextlib.suppress(OSError):
                    os.read(self._wake_r, 64)
                continue
            if fd == self._tree_fd:
                self._tree_changed()
                continue
            cg = fds.get(fd)
            if cg is None:
                continue
            try:
                self._dispatch(fd, cg, mask)
            except Exception as exc:  # one cgroup's trouble: the others still run
                self.core.fault("notification", None if isinstance(cg, Feed) else cg, exc)

    def _walk_waits(self, now: float) -> bool:
        """True while the next rescan, a walk of the whole tree, should wait: an OOM is
        being handled (issue 22: never a whole-tree walk on the OOM path), and the last
        rescan is less than :data:`BUSY_RESCAN_S` old.  Incremental rescans (the tree
        watch's events) never wait: they read only what changed."""
        if now - self._last_rescan >= BUSY_RESCAN_S or not self.core.busy():
            return False
        return self.tree is None or self.tree.walk_due()

    def _tree_changed(self) -> None:
        """The tree or a managed limit changed: rescan now, or as soon as the last
        event-driven rescan is TREE_SETTLE_S old (the next turn of the loop does it)."""
        assert self.tree is not None
        try:
            wanted = self.tree.pump()
        except Exception as exc:
            self.core.fault("tree", None, exc)
            return
        if wanted:
            soon = max(self.clock(), self._last_rescan + TREE_SETTLE_S)
            self._next_rescan = min(self._next_rescan, soon)

    def _dispatch(self, fd: int, cg: Scope | Feed, mask: int) -> None:
        if cg is KERNEL_LOG:
            for domain, victim in self.ports.kernel_kills():
                self.core.kernel_killed(domain, victim)
            return
        error = bool(mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL))
        what = self.ports.consume(cg, fd, error)
        if what is Wake.FIRED:
            self.core.notify(cg, self.clock())
        elif what is Wake.GONE:
            self._rescan(self.clock())
            if self._again:
                self._next_rescan = min(self._next_rescan, self.clock() + TREE_SETTLE_S)
                self._again = False
