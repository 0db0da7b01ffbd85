"""Kernel OOM notifications on cgroup files (the only code that opens them).

* v1: an eventfd registered through ``cgroup.event_control`` on ``memory.oom_control``
  fires when the memcg (or an ancestor) enters OOM, and once when the cgroup is removed.
* v2: ``memory.events`` / ``memory.events.local`` wake ``poll()`` with POLLPRI|POLLERR
  when a counter changes, until the file is read again (seek 0 and read).
"""

from __future__ import annotations

import os

from memcgctl.kernel.cgroupfiles import V1_EVENT_CONTROL, V1_OOM_CONTROL
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.fileio import parse_flat_keyed, write_text
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import VANISHED_ERRNOS, Vanished


class OomControlWatch:
    """v1: an eventfd that counts OOM notifications of one memcg."""

    def __init__(self, fs: CgroupFs, cg: CgroupPath) -> None:
        self.cg = cg
        base = fs.path(cg)
        try:
            self._ctl = os.open(f"{base}/{V1_OOM_CONTROL}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in VANISHED_ERRNOS:
                raise Vanished(cg) from exc
            raise
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            write_text(f"{base}/{V1_EVENT_CONTROL}", f"{self._efd} {self._ctl}")
        except OSError as exc:
            self.close()
            if exc.errno in VANISHED_ERRNOS:
                raise Vanished(cg) from exc
            raise

    def fileno(self) -> int:
        return self._efd

    def drain(self) -> int:
        """Notifications since the last drain (0 if none)."""
        try:
            return os.eventfd_read(self._efd)
        except BlockingIOError:
            return 0

    def close(self) -> None:
        for fd in (self._efd, self._ctl):
            if fd >= 0:
                os.close(fd)
        self._efd = self._ctl = -1


class EventsFileWatch:
    """v2: one open ``memory.events`` (or ``.local``) file and its last values."""

    def __init__(self, fs: CgroupFs, cg: CgroupPath, filename: str) -> None:
        self.cg = cg
        self.filename = filename
        try:
            self._fd = os.open(f"{fs.path(cg)}/{filename}", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in VANISHED_ERRNOS:
                raise Vanished(cg) from exc
            raise
        self.values = self.read()

    def fileno(self) -> int:
        return self._fd

    def read(self) -> dict[str, int]:
        """Re-read the counters (this also re-arms the notification)."""
        try:
            data = os.pread(self._fd, 4096, 0)  # one call (issue 22: the event path)
        except OSError as exc:
            if exc.errno in VANISHED_ERRNOS:
                raise Vanished(self.cg) from exc
            raise
        return parse_flat_keyed(data.decode("ascii", "replace"))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class PsiTrigger:
    """A PSI trigger: ``some STALL_US WINDOW_US`` written to ``memory.pressure`` (or
    ``/proc/pressure/memory``); the fd polls POLLPRI each time the stall exceeds the
    threshold within a window, POLLERR once the cgroup is gone."""

    def __init__(self, path: str, stall_us: int, window_us: int) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in VANISHED_ERRNOS:
                raise Vanished(path) from exc
            raise
        try:
            # /proc/pressure/* wants the trailing NUL (or newline)
            os.write(self._fd, f"some {stall_us} {window_us}\0".encode())
        except OSError:
            self.close()
            raise

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# inotify(7) masks: a file written, created or renamed into the watched directory
_IN_MODIFY = 0x2
_IN_MOVED_TO = 0x80
_IN_CREATE = 0x100
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC


class DirWatch:
    """inotify on one directory (the state directory, for the journal): its fd becomes
    readable when a file in it is written, created or renamed in.  Through libc, since
    the standard library has no inotify; :meth:`open` returns None where that fails
    (then the caller checks the file on its own timer)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @classmethod
    def open(cls, directory: str) -> DirWatch | None:
        from memcgctl.kernel.libc import Libc

        try:
            libc = Libc()
            fd = int(libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC))
        except (OSError, AttributeError):
            return None
        if fd < 0:
            return None
        mask = _IN_MODIFY | _IN_CREATE | _IN_MOVED_TO
        if int(libc.inotify_add_watch(fd, os.fsencode(directory), mask)) < 0:
            os.close(fd)
            return None
        return cls(fd)

    def fileno(self) -> int:
        return self._fd

    def drain(self) -> None:
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
