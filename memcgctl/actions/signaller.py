"""Sending signals through pidfds, behind a small interface.

:class:`Signaller` is what the kill machinery needs: open a handle on a process, send a
signal through it, give the memory of a dying process back early, wait for exits.  The
real one (:class:`PidfdSignaller`) uses pidfds, so a handle keeps naming the process it
was opened on even if the pid is reused later; tests use a recorder (tests/fakesignal.py).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from collections.abc import Iterable

from memcgctl.kernel.libc import Libc
from memcgctl.kernel.libc import errno as libc_errno
from memcgctl.vocab.errors import from_oserror
from memcgctl.vocab.structs import Protocol

# process_mrelease(2) (5.15): the same number on every architecture with the unified
# syscall table (x86_64, aarch64, riscv, ...); alpha has its own numbering.
_NR_PROCESS_MRELEASE = 448


class Signaller(Protocol):
    def open(self, pid: int) -> int | None:
        """A handle on the process that has ``pid`` now; None if there is none."""

    def send(self, handle: int, sig: int) -> bool:
        """Send ``sig``; False if the process is already gone."""

    def release(self, handle: int) -> None:
        """Reap a SIGKILLed process's memory now (best effort, never fails)."""

    def exited(self, handle: int) -> bool:
        """True once the process has exited."""

    def wait(self, handles: Iterable[int], timeout: float) -> set[int]:
        """Wait up to ``timeout`` seconds until at least one has exited; return those."""

    def close(self, handle: int) -> None: ...


class PidfdSignaller:
    """The real thing: ``pidfd_open`` + ``pidfd_send_signal`` + ``process_mrelease``."""

    def __init__(self) -> None:
        self._libc: Libc | None = None
        self._mrelease_ok = True

    def open(self, pid: int) -> int | None:
        try:
            return os.pidfd_open(pid)
        except OSError as exc:
            # ESRCH: gone; EINVAL: pid is a thread, not a process (cannot be in cgroup.procs)
            if exc.errno in (errno.ESRCH, errno.EINVAL):
                return None
            raise from_oserror(exc, f"pid {pid}", pid=pid) from exc

    def send(self, handle: int, sig: int) -> bool:
        try:
            signal.pidfd_send_signal(handle, sig)
        except ProcessLookupError:
            return False
        except OSError as exc:
            raise from_oserror(exc, "pidfd_send_signal") from exc
        return True

    def release(self, handle: int) -> None:
        if not self._mrelease_ok:
            return
        try:
            if self._libc is None:
                self._libc = Libc()
            failed = self._libc.syscall(_NR_PROCESS_MRELEASE, handle, 0) != 0
            if failed and libc_errno() == errno.ENOSYS:
                self._mrelease_ok = False  # kernel < 5.15: stop trying
        except (OSError, AttributeError):
            self._mrelease_ok = False

    def exited(self, handle: int) -> bool:
        poller = select.poll()
        poller.register(handle, select.POLLIN)
        return bool(poller.poll(0))

    def wait(self, handles: Iterable[int], timeout: float) -> set[int]:
        poller = select.poll()
        any_handle = False
        for h in handles:
            poller.register(h, select.POLLIN)
            any_handle = True
        if not any_handle:
            time.sleep(max(0.0, timeout))
            return set()
        return {fd for fd, _ in poller.poll(max(0, int(timeout * 1000)))}

    def close(self, handle: int) -> None:
        os.close(handle)
