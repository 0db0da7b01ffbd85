"""The memory-cgroup hierarchy: detection, name resolution, and typed readers/writers.

Every cgroup file name lives here as a constant.  A cgroup is addressed by its path
inside the hierarchy (``/`` or ``/batch/job1``); :class:`CgroupFs` turns that into a
file-system path under the mount it was built with, so tests use fixture trees.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from memcgctl.kernel.fileio import parse_flat_keyed, read_text, write_text
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import (
    VANISHED_ERRNOS,
    NoSuchCgroup,
    NotSupported,
    UsageProblem,
    Vanished,
    from_oserror,
)

# Both versions
CGROUP_PROCS = "cgroup.procs"
# cgroup v1 memory controller
V1_USAGE = "memory.usage_in_bytes"
V1_LIMIT = "memory.limit_in_bytes"
V1_MEMSW_LIMIT = "memory.memsw.limit_in_bytes"
V1_OOM_CONTROL = "memory.oom_control"
V1_SWAPPINESS = "memory.swappiness"
V1_EVENT_CONTROL = "cgroup.event_control"
# cgroup v2
V2_CONTROLLERS = "cgroup.controllers"
V2_CURRENT = "memory.current"
V2_MAX = "memory.max"
V2_HIGH = "memory.high"
V2_STAT = "memory.stat"
V2_SWAP_CURRENT = "memory.swap.current"
V2_SWAP_MAX = "memory.swap.max"
V2_EVENTS = "memory.events"
V2_EVENTS_LOCAL = "memory.events.local"
V2_OOM_GROUP = "memory.oom.group"
V2_KILL = "cgroup.kill"
V2_FREEZE = "cgroup.freeze"
V2_CGROUP_EVENTS = "cgroup.events"
V2_SUBTREE_CONTROL = "cgroup.subtree_control"
# cgroup v1 freezer controller
V1_FREEZER_STATE = "freezer.state"

# v1 reports "unlimited" as PAGE_COUNTER_MAX pages in bytes (LONG_MAX rounded down to a
# page); anything at or above 2**62 bytes is treated as unlimited.
_V1_UNLIMITED = 1 << 62


class Hierarchy(NamedTuple):
    """A mounted cgroup hierarchy that memcgctl works on."""

    mount: Path
    version: int  # 1 or 2
    has_memory: bool
    # The "root" field of mountinfo: the cgroup that is mounted there, as seen by the
    # kernel ("/" except inside containers).  /proc/PID/cgroup paths are relative to it.
    mount_cgroup: str = "/"


def _unescape_mountinfo(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str, str, str]]:
    """Return (fstype, mountpoint, root, super_options) for every mount."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf, rf = left.split(), right.split()
        if len(lf) < 5 or len(rf) < 3:
            continue
        mounts.append((rf[0], _unescape_mountinfo(lf[4]), _unescape_mountinfo(lf[3]), rf[2]))
    return mounts


def detect_hierarchy(proc_root: Path) -> Hierarchy:
    """The cgroup2 mount with the memory controller, else the v1 ``memory`` mount."""
    try:
        text = read_text(str(proc_root / "self" / "mountinfo"))
    except OSError as exc:
        raise from_oserror(exc, str(proc_root / "self" / "mountinfo")) from exc
    v1: Hierarchy | None = None
    for fstype, mountpoint, root, options in parse_mountinfo(text):
        if fstype == "cgroup2":
            try:
                controllers = read_text(os.path.join(mountpoint, V2_CONTROLLERS)).split()
            except OSError:
                continue
            if "memory" in controllers:
                return Hierarchy(Path(mountpoint), 2, True, root)
        elif fstype == "cgroup" and v1 is None and "memory" in options.split(","):
            v1 = Hierarchy(Path(mountpoint), 1, True, root)
    if v1 is not None:
        return v1
    raise NotSupported("no memory cgroup hierarchy is mounted (see /proc/self/mountinfo)")


def find_v1_mount(proc_root: Path, controller: str) -> Hierarchy | None:
    """The v1 mount of ``controller`` (e.g. ``freezer``), or None."""
    try:
        text = read_text(str(proc_root / "self" / "mountinfo"))
    except OSError:
        return None
    for fstype, mountpoint, root, options in parse_mountinfo(text):
        if fstype == "cgroup" and controller in options.split(","):
            return Hierarchy(Path(mountpoint), 1, controller == "memory", root)
    return None


def hierarchy_at(mount: Path) -> Hierarchy:
    """Describe an explicitly given mount (``--cgroup-root``)."""
    if not mount.is_dir():
        raise NoSuchCgroup(str(mount), "cgroup root is not a directory")
    controllers_file = mount / V2_CONTROLLERS
    if controllers_file.exists():
        try:
            controllers = read_text(str(controllers_file)).split()
        except OSError as exc:
            raise from_oserror(exc) from exc
        return Hierarchy(mount, 2, "memory" in controllers)
    if (mount / V1_LIMIT).exists():
        return Hierarchy(mount, 1, True)
    raise NotSupported(f"{mount}: not a cgroup v2 mount or a v1 memory mount")


class CgroupFs:
    """Reads and writes one cgroup hierarchy rooted at ``hierarchy.mount``."""

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.hierarchy = hierarchy
        self.mount = hierarchy.mount
        self.version = hierarchy.version
        self._mount_str = str(hierarchy.mount).rstrip("/") or "/"

    # -- names -----------------------------------------------------------------
    def path(self, cg: CgroupPath) -> str:
        return self._mount_str if cg == "/" else self._mount_str + cg

    def _split(self, name: str) -> tuple[str, list[str]]:
        """A user-supplied name as (its path relative to the mount, its components);
        refuses empty names and ``..``."""
        if not name or "\0" in name:
            raise UsageProblem("empty or invalid cgroup name")
        rel = name
        if name == self._mount_str or name.startswith(self._mount_str + "/"):
            rel = name[len(self._mount_str) :] or "/"
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UsageProblem(f"{name}: '..' would leave the cgroup hierarchy")
        return rel, parts

    def resolve(self, name: str) -> CgroupPath:
        """Validate a user-supplied cgroup name and return its hierarchy path.

        Accepts ``/``, ``/a/b``, ``a/b`` and absolute paths under the mount.  Refuses
        ``..``, symlinks and anything on another mount (exit 2), and reports a
        missing cgroup (exit 3).
        """
        rel, parts = self._split(name)
        cg = CgroupPath("/".join(parts))
        try:
            root_dev = os.lstat(self._mount_str).st_dev
        except OSError as exc:
            raise from_oserror(exc, self._mount_str, cgroup="/") from exc
        current = self._mount_str
        for part in parts:
            current = f"{current}/{part}"
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                if name.startswith("/") and rel == name and os.path.isdir(name):
                    raise UsageProblem(
                        f"{name}: not in the memory cgroup hierarchy at {self._mount_str}"
                    ) from None
                raise NoSuchCgroup(cg) from None
            except OSError as exc:
                raise from_oserror(exc, current, cgroup=cg) from exc
            if stat.S_ISLNK(st.st_mode):
                raise UsageProblem(f"{name}: symbolic links are not followed")
            if not stat.S_ISDIR(st.st_mode):
                raise NoSuchCgroup(cg, "not a cgroup directory")
            if st.st_dev != root_dev:
                raise UsageProblem(f"{name}: crosses into another mount")
        return cg

    def from_proc_path(self, path: str) -> CgroupPath:
        """Turn a /proc/PID/cgroup path (relative to the mount's cgroup) into ours.

        Text, not paths: inside a cgroup namespace both may start with ``/..``; what is
        still outside the mount after stripping is refused as :meth:`resolve` does."""
        root = self.hierarchy.mount_cgroup
        if root not in ("", "/") and (path == root or path.startswith(root + "/")):
            path = path[len(root) :] or "/"
        try:
            return CgroupPath(path)
        except ValueError:
            raise UsageProblem(f"{path}: '..' would leave the cgroup hierarchy") from None

    # -- tree ------------------------------------------------------------------
    def exists(self, cg: CgroupPath) -> bool:
        return os.path.isdir(self.path(cg))

    def children(self, cg: CgroupPath) -> list[CgroupPath]:
        base = self.path(cg)
        try:
            with os.scandir(base) as it:
                names = [e.name for e in it if e.is_dir(follow_symlinks=False)]
        except OSError as exc:
            if exc.errno in VANISHED_ERRNOS or exc.errno == errno.ENOTDIR:
                raise Vanished(cg) from exc
            raise
        return [cg.child(n) for n in sorted(names)]

    def walk(self, cg: CgroupPath = ROOT) -> Iterator[CgroupPath]:
        """Pre-order walk; subtrees that vanish meanwhile are skipped."""
        yield cg
        try:
            kids = self.children(cg)
        except Vanished:
            return
        for kid in kids:
            yield from self.walk(kid)

    def _lstat(self, cg: CgroupPath) -> os.stat_result:
        try:
            return os.lstat(self.path(cg))
        except OSError as exc:
            raise Vanished(cg) from exc

    def inode(self, cg: CgroupPath) -> int:
        """The cgroup directory's inode number (kernfs: increases with creation)."""
        return self._lstat(cg).st_ino

    # -- raw files -------------------------------------------------------------
    def read(self, cg: CgroupPath, filename: str) -> str | None:
        """The file's text; None when this kernel/controller lacks the file.

        Raises :class:`Vanished` when the cgroup itself is gone.
        """
        try:
            return read_text(f"{self.path(cg)}/{filename}")
        except OSError as exc:
            if exc.errno in VANISHED_ERRNOS:
                if exc.errno == errno.ENOENT and os.path.isdir(self.path(cg)):
                    return None
                raise Vanished(cg) from exc
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return None
            raise

    def write(self, cg: CgroupPath, filename: str, value: str) -> None:
        path = f"{self.path(cg)}/{filename}"
        try:
            write_text(path, value)
        except OSError as exc:
            if exc.errno in VANISHED_ERRNOS and not os.path.isdir(self.path(cg)):
                raise NoSuchCgroup(cg, "vanished") from exc
            raise from_oserror(exc, path) from exc

    def has_file(self, cg: CgroupPath, filename: str) -> bool:
        return os.path.exists(f"{self.path(cg)}/{filename}")

    # -- creating and joining (``memcgctl run``) -----------------------------------
    def resolve_new(self, name: str) -> tuple[CgroupPath, list[CgroupPath]]:
        """Like :meth:`resolve` for a cgroup that may not exist yet.

        Returns the hierarchy path and the cgroups that are missing, top-down (empty when
        it exists).  The existing part is validated as :meth:`resolve` does (no ``..``,
        symlinks or other mounts); the hierarchy root itself is refused.
        """
        rel, parts = self._split(name)
        if not parts:
            raise UsageProblem(f"{name}: the hierarchy root cannot be created or joined")
        first = f"{self._mount_str}/{parts[0]}"
        # "/sys/fs/cgroup/cpu/x" names a directory elsewhere, not a new "/sys/..." cgroup:
        # refuse rather than create a surprising tree
        if (
            rel == name
            and name.startswith("/")
            and not os.path.lexists(first)
            and os.path.lexists("/" + parts[0])
        ):
            raise UsageProblem(
                f"{name}: not in the memory cgroup hierarchy at {self._mount_str}"
                f" (to create a cgroup of that name, write it without the leading /)"
            )
        existing = len(parts)
        while existing > 0:
            candidate = CgroupPath("/".join(parts[:existing]))
            if os.path.lexists(self.path(candidate)):
                break
            existing -= 1
        self.resolve("/" + "/".join(parts[:existing]))  # validates the existing part
        missing = [CgroupPath("/".join(parts[: i + 1])) for i in range(existing, len(parts))]
        return CgroupPath("/".join(parts)), missing

    def make(self, cg: CgroupPath) -> None:
        """Create cgroup ``cg`` (its parent must exist)."""
        try:
            os.mkdir(self.path(cg), 0o755)
        except FileExistsError:
            return
        except OSError as exc:
            raise from_oserror(exc, self.path(cg), cgroup=cg) from exc

    def enable_memory_controller(self, parent: CgroupPath) -> bool:
        """v2: make the memory controller available to ``parent``'s children
        (``+memory`` in cgroup.subtree_control).  True if it had to be written."""
        if self.version != 2:
            return False
        current = self.read(parent, V2_SUBTREE_CONTROL)
        if current is not None and "memory" in current.split():
            return False
        self.write(parent, V2_SUBTREE_CONTROL, "+memory")
        return True

    def attach(self, cg: CgroupPath, pid: int) -> None:
        """Move process ``pid`` into ``cg`` (write it to cgroup.procs)."""
        self.write(cg, CGROUP_PROCS, str(pid))

    def _int(self, cg: CgroupPath, filename: str) -> int | None:
        text = self.read(cg, filename)
        if text is None:
            return None
        text = text.strip()
        if text == "max":
            return None
        try:
            return int(text)
        except ValueError:
            return None

    # -- typed readers ---------------------------------------------------------
    def procs(self, cg: CgroupPath) -> list[int]:
        text = self.read(cg, CGROUP_PROCS)
        if text is None:
            raise Vanished(cg)
        return [int(x) for x in text.split()]

    def usage(self, cg: CgroupPath) -> int | None:
        return self._int(cg, V1_USAGE if self.version == 1 else V2_CURRENT)

    def limit(self, cg: CgroupPath) -> int | None:
        """Memory limit in bytes; None = unlimited (or no limit file, e.g. v2 root)."""
        if self.version == 1:
            value = self._int(cg, V1_LIMIT)
            return None if value is None or value >= _V1_UNLIMITED else value
        return self._int(cg, V2_MAX)

    def high(self, cg: CgroupPath) -> int | None:
        """v2 ``memory.high`` in bytes; None = max (or absent)."""
        return self._int(cg, V2_HIGH) if self.version == 2 else None

    def memory_stat(self, cg: CgroupPath) -> dict[str, int]:
        """v2 ``memory.stat`` (anon, file, active_file, inactive_file, shmem, …)."""
        text = self.read(cg, V2_STAT) if self.version == 2 else None
        if text is None:
            raise Vanished(cg)
        return parse_flat_keyed(text)

    def swap_room(self, cg: CgroupPath) -> int | None:
        """v2: bytes of swap this memcg may still use by its own memory.swap.max;
        None when unlimited (the host's SwapFree bounds it)."""
        limit = self._int(cg, V2_SWAP_MAX) if self.version == 2 else None
        if limit is None:
            return None
        return max(limit - (self._int(cg, V2_SWAP_CURRENT) or 0), 0)

    def swap_limit(self, cg: CgroupPath) -> int | None:
        """Swap this memcg may use in bytes, on top of its memory limit; None = no limit.

        v1: memsw limit minus memory limit; v2: memory.swap.max.  What a memcg OOM adds
        to the limit for totalpages (mm/oom_kill.c constrained_alloc() ->
        mem_cgroup_get_max(), capped at the host's swap, only when swappiness != 0).
        """
        if self.version == 1:
            memsw = self._int(cg, V1_MEMSW_LIMIT)
            mem = self._int(cg, V1_LIMIT)
            if memsw is None or memsw >= _V1_UNLIMITED or mem is None:
                return None
            return max(memsw - mem, 0)
        return self._int(cg, V2_SWAP_MAX)

    def swappiness(self, cg: CgroupPath) -> int | None:
        return self._int(cg, V1_SWAPPINESS) if self.version == 1 else None

    def oom_control(self, cg: CgroupPath) -> dict[str, int]:
        """v1 ``memory.oom_control``: oom_kill_disable, under_oom, oom_kill (local)."""
        text = self.read(cg, V1_OOM_CONTROL) if self.version == 1 else None
        return parse_flat_keyed(text) if text is not None else {}

    def events(self, cg: CgroupPath, local: bool = False) -> dict[str, int]:
        """v2 ``memory.events`` (hierarchical) or ``memory.events.local``; {} if absent."""
        if self.version != 2:
            return {}
        text = self.read(cg, V2_EVENTS_LOCAL if local else V2_EVENTS)
        return parse_flat_keyed(text) if text is not None else {}

    def oom_group(self, cg: CgroupPath) -> bool | None:
        if self.version != 2:
            return None
        value = self._int(cg, V2_OOM_GROUP)
        return None if value is None else value == 1

    def subtree_procs(self, cg: CgroupPath) -> list[tuple[int, CgroupPath]]:
        """(pid, cgroup) of every process in cg's subtree, pre-order; cgroups that
        vanish meanwhile are skipped."""
        out: list[tuple[int, CgroupPath]] = []
        for sub in self.walk(cg):
            try:
                out.extend((pid, sub) for pid in self.procs(sub))
            except Vanished:
                continue
        return out

    # -- v2 cgroup core: cgroup.events, cgroup.kill, cgroup.freeze ----------------
    def wait_cgroup_event(self, cg: CgroupPath, key: str, value: int, timeout: float) -> bool:
        """Wait until ``cgroup.events`` shows ``key value`` (e.g. populated 0, frozen 1).

        Sleeps in poll() for POLLPRI on the open file (the kernel wakes it on every
        change; the file must be re-read to re-arm), never a busy loop.  A cgroup that
        is removed meanwhile counts as ``populated 0``.  Returns False on timeout.
        """
        path = f"{self.path(cg)}/{V2_CGROUP_EVENTS}"
        gone = key == "populated" and value == 0
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in VANISHED_ERRNOS:
                if gone:
                    return True
                raise Vanished(cg) from exc
            raise from_oserror(exc, path) from exc
        deadline = time.monotonic() + timeout
        try:
            poller = select.poll()
            poller.register(fd, select.POLLPRI | select.POLLERR)
            while True:
                try:
                    os.lseek(fd, 0, os.SEEK_SET)
                    data = os.read(fd, 4096).decode()
                except OSError as exc:
                    if exc.errno in VANISHED_ERRNOS:
                        if gone:
                            return True
                        raise Vanished(cg) from exc
                    raise from_oserror(exc, path) from exc
                if parse_flat_keyed(data).get(key) == value:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                poller.poll(max(1, int(remaining * 1000 + 0.999)))
        finally:
            os.close(fd)

    def kill(self, cg: CgroupPath) -> None:
        """Write 1 to v2 ``cgroup.kill``: SIGKILL every task in the subtree (5.14+)."""
        self.write(cg, V2_KILL, "1")

    def freeze_value(self, cg: CgroupPath) -> bool | None:
        """v2 ``cgroup.freeze`` (what was asked, not whether it is done); None if absent."""
        if self.version != 2:
            return None
        value = self._int(cg, V2_FREEZE)
        return None if value is None else value == 1

    def set_freeze(self, cg: CgroupPath, frozen: bool) -> None:
        self.write(cg, V2_FREEZE, "1" if frozen else "0")

    def freezer_state(self, cg: CgroupPath) -> str | None:
        """v1 ``freezer.state`` (THAWED, FREEZING, FROZEN); None if absent."""
        text = self.read(cg, V1_FREEZER_STATE) if self.version == 1 else None
        return text.strip() if text is not None else None

    def set_freezer_state(self, cg: CgroupPath, state: str) -> None:
        self.write(cg, V1_FREEZER_STATE, state)

    # -- ownership and extended attributes ---------------------------------------
    def owner(self, cg: CgroupPath) -> int:
        return self._lstat(cg).st_uid

    def get_xattr(self, cg: CgroupPath, name: str) -> bytes | None:
        try:
            return os.getxattr(self.path(cg), name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
                return None
            if exc.errno in VANISHED_ERRNOS:
                raise Vanished(cg) from exc
            raise

    def set_xattr(self, cg: CgroupPath, name: str, value: bytes) -> None:
        try:
            os.setxattr(self.path(cg), name, value, follow_symlinks=False)
        except OSError as exc:
            raise from_oserror(exc, f"{self.path(cg)} ({name})", cgroup=cg) from exc

    def remove_xattr(self, cg: CgroupPath, name: str) -> None:
        try:
            os.removexattr(self.path(cg), name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                return
            raise from_oserror(exc, f"{self.path(cg)} ({name})", cgroup=cg) from exc
