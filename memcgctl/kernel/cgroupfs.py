"""The memory-cgroup hierarchy's typed readers and writers.

:class:`CgroupFs` is the :class:`~memcgctl.kernel.cgrouptree.CgroupTree` of one
hierarchy (names, tree, raw files) plus what memcgctl reads and writes in it: usage,
limits, swap, ``memory.stat``, OOM control and events as numbers; creating and joining
cgroups (``memcgctl run``); the v2 cgroup core (``cgroup.events``, ``cgroup.kill``,
``cgroup.freeze``) and the v1 freezer; ownership and extended attributes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Iterator

from memcgctl.kernel.cgroupfiles import (
    CGROUP_PROCS,
    V1_FREEZER_STATE,
    V1_LIMIT,
    V1_MEMSW_LIMIT,
    V1_OOM_CONTROL,
    V1_SWAPPINESS,
    V1_USAGE,
    V2_CGROUP_EVENTS,
    V2_CURRENT,
    V2_EVENTS,
    V2_EVENTS_LOCAL,
    V2_FREEZE,
    V2_HIGH,
    V2_KILL,
    V2_MAX,
    V2_OOM_GROUP,
    V2_STAT,
    V2_SUBTREE_CONTROL,
    V2_SWAP_CURRENT,
    V2_SWAP_MAX,
)
from memcgctl.kernel.cgrouptree import CgroupTree
from memcgctl.kernel.fileio import parse_flat_keyed
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import VANISHED_ERRNOS, Vanished, from_oserror

# v1 reports "unlimited" as PAGE_COUNTER_MAX pages in bytes (LONG_MAX rounded down to a
# page); anything at or above 2**62 bytes is treated as unlimited.
_V1_UNLIMITED = 1 << 62


class CgroupFs(CgroupTree):
    """Reads and writes one cgroup hierarchy rooted at ``hierarchy.mount``."""

    # While a snapshot is taken (:meth:`xattr_names_cached`): cgroup -> the names of its
    # extended attributes, listed once per cgroup when the walk reaches it, so that the
    # four or five settings read per cgroup cost one listxattr, not one getxattr each
    # (most cgroups have none).  Off otherwise: marks and claims always read afresh.
    _xattr_names: dict[CgroupPath, frozenset[str]] | None = None

    @contextlib.contextmanager
    def xattr_names_cached(self) -> Iterator[None]:
        outer = self._xattr_names
        if outer is None:
            self._xattr_names = {}
        try:
            yield
        finally:
            if outer is None:
                self._xattr_names = None

    def _seen(self, cg: CgroupPath) -> None:
        if self._xattr_names is not None:
            try:
                names = os.listxattr(self.dir_path(cg), follow_symlinks=False)
            except OSError:
                return  # not listed: get_xattr asks the kernel
            self._xattr_names[cg] = frozenset(names)

    # -- creating and joining (``memcgctl run``) -----------------------------------
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
        """``memory.stat``: v2 (anon, file, active_file, inactive_file, shmem, …) or v1
        (its own counters and the hierarchical ``total_*`` ones)."""
        text = self.read(cg, V2_STAT)  # the same name on v1
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
        import select  # only here: one-shot commands start without it

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
        if self._xattr_names is not None:
            names = self._xattr_names.get(cg)
            if names is not None and name not in names:
                return None
        try:
            return os.getxattr(self.dir_path(cg), name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno in (errno.ENODATA, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
                return None
            if exc.errno in VANISHED_ERRNOS or exc.errno == errno.ENAMETOOLONG:
                raise Vanished(cg) from exc
            raise

    def set_xattr(self, cg: CgroupPath, name: str, value: bytes) -> None:
        try:
            os.setxattr(self.dir_path(cg), name, value, follow_symlinks=False)
        except OSError as exc:
            raise from_oserror(exc, f"{self.path(cg)} ({name})", cgroup=cg) from exc

    def create_xattr(self, cg: CgroupPath, name: str, value: bytes) -> bool:
        """Set name only if it does not exist yet (XATTR_CREATE: the kernel decides
        between racing writers); False when it exists."""
        try:
            os.setxattr(self.path(cg), name, value, os.XATTR_CREATE, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                return False
            raise from_oserror(exc, f"{self.path(cg)} ({name})", cgroup=cg) from exc
        return True

    def remove_xattr(self, cg: CgroupPath, name: str) -> None:
        try:
            os.removexattr(self.dir_path(cg), name, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENODATA:
                return
            raise from_oserror(exc, f"{self.path(cg)} ({name})", cgroup=cg) from exc
