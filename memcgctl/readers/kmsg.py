"""The kernel log device: /dev/kmsg records, history then follow.

``open(O_RDONLY|O_NONBLOCK)`` starts at the oldest record still in the ring; each
``read()`` returns one record; EAGAIN means "no more for now" (the end of the history,
then: wait with poll()).  EPIPE means the ring overwrote records we had not read yet:
the next read continues with the oldest record still there, so we count the loss and
carry on.  A regular file (a fixture) holds records separated by newlines, continuation
lines starting with a space; it has a history but nothing to follow.
"""

from __future__ import annotations

import errno
import os
import stat

from memcgctl.errors import from_oserror

_RECORD_MAX = 8192  # the kernel's CONSOLE_EXT_LOG_MAX; a smaller buffer gets EINVAL


def split_records(data: bytes) -> list[bytes]:
    """Records of a kmsg dump file: a line not starting with a space begins a record."""
    out: list[bytes] = []
    for line in data.split(b"\n"):
        if line.startswith(b" ") and out:
            out[-1] += b"\n" + line
        elif line:
            out.append(line)
    return out


class KmsgReader:
    """Reads records from the kernel log device (or a dump file)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lost = 0  # times the ring overwrote records before we read them (EPIPE)
        self.fd = -1
        self.is_device = True
        self._pending: list[bytes] = []

    def open(self) -> KmsgReader:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self.is_device = not stat.S_ISREG(os.fstat(self.fd).st_mode)
        except OSError as exc:
            raise from_oserror(exc, self.path) from exc
        if not self.is_device:
            data = b""
            while True:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    break
                data += chunk
            self._pending = split_records(data)
        return self

    def fileno(self) -> int:
        return self.fd

    def _read_one(self) -> bytes:
        """One record; raises BlockingIOError at the end, BrokenPipeError on overwrite."""
        return os.read(self.fd, _RECORD_MAX)

    def read_available(self) -> list[bytes]:
        """Every record available now (never blocks)."""
        if not self.is_device:
            out, self._pending = self._pending, []
            return out
        out = []
        read_one = self._read_one  # one record per read(2): thousands on a full ring
        while True:
            try:
                data = read_one()
            except BlockingIOError:
                break
            except BrokenPipeError:
                self.lost += 1
                continue
            except OSError as exc:
                if exc.errno == errno.EAGAIN:
                    break
                if exc.errno == errno.EPIPE:
                    self.lost += 1
                    continue
                raise
            if not data:
                break
            out.append(data)
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
