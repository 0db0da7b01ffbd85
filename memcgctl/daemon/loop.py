"""The thin loop around :class:`~memcgctl.daemon.core.DaemonCore`: poll every
notification fd, feed the core, sleep until its next deadline, rescan now and then."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable

from memcgctl.cgpath import CgroupPath, HostScope
from memcgctl.daemon.core import DaemonCore
from memcgctl.daemon.ports import RealPorts


class Loop:
    def __init__(
        self,
        core: DaemonCore,
        ports: RealPorts,
        rescan_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.core = core
        self.ports = ports
        self.rescan_interval = rescan_interval
        self.clock = clock
        self.stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def stop(self) -> None:
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: self.stop())

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        self.ports.open_kernel_log()
        now = self.clock()
        self.core.rescan(now, starting=True)
        self.ports.release_orphans()
        next_rescan = now + self.rescan_interval
        try:
            while not self.stopping and not until():
                now = self.clock()
                deadline = self.core.tick(now)
                now = self.clock()
                if now >= next_rescan:
                    self.core.rescan(now)
                    next_rescan = now + self.rescan_interval
                wake = next_rescan if deadline is None else min(deadline, next_rescan)
                timeout_ms = max(0, int((wake - now) * 1000) + 1)
                fds = self.ports.fds()
                poller = select.poll()
                poller.register(self._wake_r, select.POLLIN)
                for fd in fds:
                    poller.register(fd, self.ports.poll_events(fd))
                for fd, mask in poller.poll(timeout_ms):
                    if fd == self._wake_r:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 64)
                        continue
                    cg = fds.get(fd)
                    if cg is None:
                        continue
                    if not isinstance(cg, (CgroupPath, HostScope)):  # "": the kernel log
                        for domain, victim in self.ports.kernel_kills():
                            self.core.kernel_killed(domain, victim)
                        continue
                    error = bool(mask & (select.POLLERR | select.POLLHUP | select.POLLNVAL))
                    what = self.ports.consume(cg, fd, error)
                    if what == "fired":
                        self.core.notify(cg, self.clock())
                    elif what == "gone":
                        self.core.rescan(self.clock())
        finally:
            self.core.release_all()
            self.ports.close_all()
            os.close(self._wake_r)
            os.close(self._wake_w)
