"""/proc: processes, their memory and OOM knobs, host memory and counters.

Pass the proc root in (``ProcFs(Path("/proc"))``); tests use a fixture tree.  A process
that exits while we read it raises :class:`~memcgctl.vocab.errors.Vanished`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from memcgctl.kernel.fileio import parse_flat_keyed, read_bytes, read_text
from memcgctl.vocab.errors import VANISHED_ERRNOS, Vanished
from memcgctl.vocab.structs import NamedTuple

# /proc/PID/status keys we use, with the ProcStatus field they fill (values in kB).
_KB_FIELDS = {
    b"RssAnon": "rss_anon_kb",
    b"RssFile": "rss_file_kb",
    b"RssShmem": "rss_shmem_kb",
    b"VmSwap": "swap_kb",
    b"VmPTE": "pgtables_kb",
}


class ProcStatus(NamedTuple):
    """What /proc/PID/status tells about a process's memory.  (A NamedTuple: one is
    built per process on the host, and a tuple is several times cheaper to build than
    a frozen dataclass.)"""

    name: str
    uid: int
    has_mm: bool  # kernel threads and zombies have no mm: no Rss*/Vm* lines
    kthread: bool
    rss_anon_kb: int = 0
    rss_file_kb: int = 0
    rss_shmem_kb: int = 0
    swap_kb: int = 0
    pgtables_kb: int = 0


# bytes.find per key instead of splitting ~55 lines in Python: this parse runs for
# every process on the host (at most 1.5x a bare Python loop: bench/predict_bench.py).
_FIND_KB = tuple((b"\n" + key + b":", field) for key, field in _KB_FIELDS.items())


def _first_int(data: bytes, key: bytes) -> int | None:
    i = data.find(key)
    if i < 0:
        return None
    start = i + len(key)
    end = data.find(b"\n", start)
    fields = data[start : end if end >= 0 else None].split()
    return int(fields[0]) if fields and fields[0].isdigit() else None


_KB_BY_TOKEN = {key + b":": field for key, field in _KB_FIELDS.items()}


def _kb_block(data: bytes) -> dict[str, int] | None:
    """Fast path: RssAnon .. VmSwap are consecutive ``Key:\t N kB`` lines, so one split
    gives (key, value, "kB") triples.  None when the block does not look like that."""
    i = data.find(b"\nRssAnon:")
    if i < 0:
        return {}
    j = data.find(b"\nVmSwap:", i)
    if j < 0:
        return None
    k = data.find(b"\n", j + 1)
    toks = data[i + 1 : k if k >= 0 else None].split()
    keys, vals = toks[0::3], toks[1::3]
    if len(toks) % 3 or not all(t.endswith(b":") for t in keys):
        return None
    return {
        _KB_BY_TOKEN[key]: int(val)
        for key, val in zip(keys, vals, strict=True)
        if key in _KB_BY_TOKEN
    }


def parse_status(data: bytes) -> ProcStatus:
    name = ""
    if data.startswith(b"Name:"):
        end = data.find(b"\n")
        # status escapes "\n" and "\\" in the name; keep it readable as is
        name = data[5 : end if end >= 0 else None].strip(b"\t ").decode("utf-8", "replace")
    uid = _first_int(data, b"\nUid:")
    values = _kb_block(data)
    if values is None:  # an unusual layout: look each key up
        values = {}
        for key, field in _FIND_KB:
            value = _first_int(data, key)
            if value is not None:
                values[field] = value
    has_mm = "rss_anon_kb" in values
    # the kernel shows no mm for kernel threads (get_task_mm), so only an mm-less task
    # can be one: skip the lookup for the common case
    kthread = not has_mm and _first_int(data, b"\nKthread:") == 1
    return ProcStatus(
        name=name,
        uid=-1 if uid is None else uid,
        has_mm=has_mm,
        kthread=kthread,
        **values,
    )


def parse_stat_starttime(data: bytes) -> int:
    """Field 22 of /proc/PID/stat.  The comm may contain ')' and spaces: split after
    the *last* ')' (psutil learned this the hard way)."""
    after = data[data.rindex(b")") + 2 :].split()
    return int(after[19])  # after[0] is field 3 (state)


def parse_stat_flags(data: bytes) -> int:
    after = data[data.rindex(b")") + 2 :].split()
    return int(after[6])  # field 9


PF_KTHREAD = 0x00200000
_PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class MeminfoFields:
    """Some /proc/meminfo fields (kB), read as the daemon's host poll needs them: one
    pread of a kept fd into a reused buffer, then one search per field, each from where
    the last was found (the kernel's order; any order still works); no split, no dict.
    About twice as fast as :meth:`ProcFs.meminfo_kb_of`, most of what is left the
    kernel's making of the text.  ``close()`` it when done."""

    def __init__(self, path: str, keys: tuple[str, ...]) -> None:
        self.path = path
        self._tags = [b"\n" + key.encode() + b":" for key in keys]
        self._fd = -1
        self._room(8192)

    def _room(self, size: int) -> None:
        self._buf = bytearray(b"\n" + bytes(size - 1))  # "\n": the first line found alike
        self._into = [memoryview(self._buf)[1:]]

    def read(self) -> list[int]:
        """The values in the keys' order; -1 for a field the kernel does not have."""
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        end = os.preadv(self._fd, self._into, 0) + 1
        while end == len(self._buf):  # no room left: it may go on (never so far: ~1.5 KiB)
            self._room(2 * len(self._buf))
            end = os.preadv(self._fd, self._into, 0) + 1
        find = self._buf.find
        out = []
        pos = 0
        for tag in self._tags:
            at = find(tag, pos, end)
            if at < 0:
                at = find(tag, 0, pos)
                if at < 0:
                    out.append(-1)
                    continue
            pos = at + len(tag)
            nl = find(b"\n", pos, end)
            value = self._buf[pos : nl if nl >= 0 else end].removesuffix(b" kB")
            try:
                out.append(int(value))  # int() takes the spaces around it
            except ValueError:
                out.append(-1)
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class ProcFs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._root = str(root).rstrip("/") or "/"

    def _pid_file(self, pid: int, name: str) -> bytes:
        try:
            return read_bytes(f"{self._root}/{pid}/{name}")
        except OSError as exc:
            if exc.errno in VANISHED_ERRNOS:
                raise Vanished(f"pid {pid}") from exc
            raise

    def status_and_adj(
        self, pid: int, with_score: bool = False
    ) -> tuple[ProcStatus, int, int | None]:
        """status, oom_score_adj and (if asked) oom_score together: the reads a
        host-wide snapshot makes for every process, without the per-file call
        overhead (bench/predict_bench.py)."""
        base = f"{self._root}/{pid}/"
        flags = os.O_RDONLY | os.O_CLOEXEC
        score: int | None = None
        try:
            fd = os.open(base + "status", flags)
            try:
                status = os.read(fd, 65536)
            finally:
                os.close(fd)
            fd = os.open(base + "oom_score_adj", flags)
            try:
                adj = int(os.read(fd, 64))
            finally:
                os.close(fd)
            if with_score:
                fd = os.open(base + "oom_score", flags)
                try:
                    score = int(os.read(fd, 64))
                finally:
                    os.close(fd)
        except OSError as exc:
            if exc.errno in VANISHED_ERRNOS:
                raise Vanished(f"pid {pid}") from exc
            raise
        return parse_status(status), adj, score

    def exists(self, pid: int) -> bool:
        return os.path.isdir(f"{self._root}/{pid}")

    def status(self, pid: int) -> ProcStatus:
        return parse_status(self._pid_file(pid, "status"))

    def oom_score_adj(self, pid: int) -> int:
        return int(self._pid_file(pid, "oom_score_adj"))

    def oom_score(self, pid: int) -> int:
        return int(self._pid_file(pid, "oom_score"))

    def start_time(self, pid: int) -> int:
        """Start time in clock ticks since boot: with the pid, a process identity
        that survives pid reuse."""
        return parse_stat_starttime(self._pid_file(pid, "stat"))

    def ppid_and_start(self, pid: int) -> tuple[int, int]:
        """(parent pid, start time) from one read of /proc/PID/stat: one link of the
        ppid chain, with the start time that makes it survive pid reuse."""
        data = self._pid_file(pid, "stat")
        after = data[data.rindex(b")") + 2 :].split()
        return int(after[1]), int(after[19])  # fields 4 and 22

    def children(self, pid: int) -> list[int]:
        """The children of process ``pid`` (of each of its threads), from
        ``/proc/PID/task/TID/children`` (CONFIG_PROC_CHILDREN, Linux 3.5+).  Raises
        Vanished when the process is gone, NotImplementedError without the file."""
        base = f"{self._root}/{pid}/task"
        try:
            tids = os.listdir(base)
        except OSError as exc:
            if os.path.isdir(f"{self._root}/{pid}"):  # a /proc without task/ (a fixture)
                raise NotImplementedError("/proc/PID/task") from None
            raise Vanished(f"pid {pid}") from exc
        out: list[int] = []
        for tid in tids:
            try:
                with open(f"{base}/{tid}/children", "rb") as f:
                    out.extend(int(x) for x in f.read().split())
            except FileNotFoundError:
                if not os.path.exists(f"{base}/{tid}"):
                    continue  # the thread exited meanwhile
                raise NotImplementedError("/proc/PID/task/TID/children") from None
            except OSError:
                continue
        return out

    def exe(self, pid: int) -> str | None:
        """The executable's path (None: not readable, a kernel thread, or gone)."""
        try:
            return os.readlink(f"{self._root}/{pid}/exe")
        except OSError:
            return None

    def cmdline(self, pid: int) -> str | None:
        """The command line, arguments joined by spaces (None: unreadable or gone)."""
        try:
            data = self._pid_file(pid, "cmdline")
        except (Vanished, OSError):
            return None
        return data.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")

    def is_kernel_thread(self, pid: int) -> bool:
        return bool(parse_stat_flags(self._pid_file(pid, "stat")) & PF_KTHREAD)

    def comm(self, pid: int) -> str:
        return self._pid_file(pid, "comm").decode("utf-8", "replace").rstrip("\n")

    def comm_and_rss_kb(self, pid: int) -> tuple[str, int]:
        """comm and resident set size (kB) from one read of /proc/PID/stat."""
        data = self._pid_file(pid, "stat")
        comm = data[data.index(b"(") + 1 : data.rindex(b")")].decode("utf-8", "replace")
        after = data[data.rindex(b")") + 2 :].split()
        return comm, int(after[21]) * _PAGE_KB  # field 24: rss in pages

    def cgroup_lines(self, pid: int) -> list[tuple[str, list[str], str]]:
        """/proc/PID/cgroup as (hierarchy id, controllers, path)."""
        out = []
        for line in self._pid_file(pid, "cgroup").decode("utf-8", "replace").splitlines():
            hid, _, rest = line.partition(":")
            controllers, _, path = rest.partition(":")
            out.append((hid, controllers.split(",") if controllers else [], path))
        return out

    def memory_cgroup(self, pid: int, version: int) -> str:
        """The path of PID's memory cgroup (v1: the ``memory`` line; v2: ``0::``)."""
        for hid, controllers, path in self.cgroup_lines(pid):
            if version == 2 and hid == "0" and not controllers:
                return path
            if version == 1 and "memory" in controllers:
                return path
        raise Vanished(f"pid {pid}")

    def meminfo_kb(self) -> dict[str, int]:
        out = {}
        for line in read_text(f"{self._root}/meminfo").splitlines():
            key, _, rest = line.partition(":")
            fields = rest.split()
            if fields and fields[0].isdigit():
                out[key] = int(fields[0])
        return out

    def meminfo_kb_of(self, *keys: str) -> dict[str, int]:
        """Only these /proc/meminfo fields (kB), found by search instead of parsing every
        line: the daemon's host poll reads it several times a second."""
        data = b"\n" + read_bytes(f"{self._root}/meminfo")
        out = {}
        for key in keys:
            tag = b"\n" + key.encode() + b":"
            at = data.find(tag)
            if at < 0:
                continue
            start = at + len(tag)
            end = data.find(b"\n", start)
            fields = data[start : end if end >= 0 else len(data)].split()
            if fields and fields[0].isdigit():
                out[key] = int(fields[0])
        return out

    def meminfo_fields(self, *keys: str) -> MeminfoFields:
        """A reader of these /proc/meminfo fields for a poll several times a second."""
        return MeminfoFields(f"{self._root}/meminfo", keys)

    def vmstat(self) -> dict[str, int]:
        return parse_flat_keyed(read_text(f"{self._root}/vmstat"))

    def has_capability(self, cap: int, pid: int | str = "self") -> bool:
        """Whether PID's effective capability set holds ``cap`` (e.g. 24,
        CAP_SYS_RESOURCE), from the CapEff line of /proc/PID/status."""
        try:
            for line in read_text(f"{self._root}/{pid}/status").splitlines():
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> cap & 1)
        except (OSError, ValueError, IndexError):
            pass
        return False

    def boot_id(self) -> str:
        try:
            return read_text(f"{self._root}/sys/kernel/random/boot_id").strip()
        except OSError:
            return "unknown"

    def boot_time(self) -> float:
        """The boot time (epoch seconds) that kernel-log timestamps count from.

        On the live /proc: realtime minus CLOCK_MONOTONIC, which is what the printk
        clock follows to within a millisecond (``btime`` in /proc/stat is whole
        seconds).  On a fixture tree: ``btime`` from its ``stat``."""
        if self._root == "/proc":
            # to the millisecond: two processes (two `events --follow`) then stamp the
            # same kernel record with the same time
            return round(time.time() - time.clock_gettime(time.CLOCK_MONOTONIC), 3)
        try:
            for line in read_text(f"{self._root}/stat").splitlines():
                if line.startswith("btime "):
                    return float(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return 0.0

    def kernel_release(self) -> str:
        try:
            return read_text(f"{self._root}/sys/kernel/osrelease").strip()
        except OSError:
            return os.uname().release

    def sysctl(self, name: str) -> int | None:
        try:
            return int(read_text(f"{self._root}/sys/{name.replace('.', '/')}").split()[0])
        except (OSError, ValueError, IndexError):
            return None
