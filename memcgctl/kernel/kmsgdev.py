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

from memcgctl.vocab.errors import UsageProblem, from_oserror

_RECORD_MAX = 8192  # the kernel's CONSOLE_EXT_LOG_MAX; a smaller buffer gets EINVAL
# /dev/kmsg is character device 1:11 (drivers/char/mem.c); anything else that is not a
# regular file (/dev/zero, a FIFO, a socket) would be read forever or block.
KMSG_DEVICE = (1, 11)
# A saved ring is a few MiB; refuse to slurp anything far larger (/proc/kcore, a disk).
MAX_DUMP_BYTES = 256 << 20


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
            st = os.fstat(self.fd)
        except OSError as exc:
            raise from_oserror(exc, self.path) from exc
        self.is_device = not stat.S_ISREG(st.st_mode)
        if self.is_device and not (
            stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == KMSG_DEVICE
        ):
            self.close()
            raise UsageProblem(
                f"{self.path}: not a kernel log (the /dev/kmsg device or a saved dump file)"
            )
        if not self.is_device:
            parts: list[bytes] = []
            total = 0
            while True:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > MAX_DUMP_BYTES:
                    self.close()
                    raise UsageProblem(f"{self.path}: larger than {MAX_DUMP_BYTES >> 20} MiB")
                parts.append(chunk)
            self._pending = split_records(b"".join(parts))
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

    def skip_history(self) -> None:
        """Go past every record now in the ring without reading it: ``lseek(SEEK_END)``,
        the device's own way to see only new messages (a full ring is thousands of
        records, one ``read(2)`` and one bytes object each: a peak of ~1 MiB the daemon
        kept resident, issue 22).  A dump file's history is dropped; a device that
        refuses the seek is read to its end, as before."""
        if not self.is_device:
            self._pending = []
            return
        try:
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError:
            self.read_available()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
