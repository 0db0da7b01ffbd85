"""One cgroup hierarchy as a tree of directories: names, the tree, raw files.

A cgroup is addressed by its path inside the hierarchy (``/`` or ``/batch/job1``);
:class:`CgroupTree` turns that into a file-system path under the mount it was built
with (so tests use fixture trees), validates the names users give (no ``..``, symbolic
links or other mounts), walks the tree, and reads and writes a cgroup's files as text,
telling a missing file from a cgroup that vanished.  The typed readers and the writers
are :class:`~memcgctl.kernel.cgroupfs.CgroupFs`, built on it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator

from memcgctl.kernel.fileio import pread_bytes, read_text, write_text
from memcgctl.kernel.hierarchy import Hierarchy, mount_type
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import (
    VANISHED_ERRNOS,
    NoSuchCgroup,
    UsageProblem,
    Vanished,
    from_oserror,
)

# A path this long (bytes, with the mount) is reached through an open directory instead:
# the kernel refuses paths of PATH_MAX (4096) or more with ENAMETOOLONG, and a user who
# may create cgroups can nest long names past that (issue 21).  The margin leaves room
# for the file name that follows.
LONG_PATH = 3800
_LONG_FDS = 64  # directories kept open for long paths (least recently used is closed)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_CLOEXEC
# a directory that cannot be listed because it went away (ENAMETOOLONG: a long path
# that :meth:`CgroupTree.path` could not open step by step, i.e. no longer there)
_GONE = frozenset({*VANISHED_ERRNOS, errno.ENOTDIR, errno.ENAMETOOLONG})


READS_PER_CALL = 256  # file reads between two calls of CgroupTree.on_reads


KEEP_SPARE = 256  # open files never taken by keep_open: the process's own, a kill's


def keep_budget() -> int:
    """How many cgroup files :meth:`CgroupTree.keep_open` may keep: half of the open
    files the process may have beyond :data:`KEEP_SPARE`.  Files kept to save an
    open() never take the fds a watch, a pidfd or a kill needs (a node's hundreds of
    managed memcgs under a soft limit of 1024: the rest are read by path).  Only the
    daemon keeps files (it imports ``resource`` first: a one-shot command never)."""
    import resource

    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, (soft - KEEP_SPARE) // 2)


class CgroupTree:
    """Names, tree and raw files of one cgroup hierarchy rooted at ``hierarchy.mount``."""

    def __init__(self, hierarchy: Hierarchy) -> None:
        self.hierarchy = hierarchy
        self.mount = hierarchy.mount
        self.version = hierarchy.version
        self._mount_str = str(hierarchy.mount).rstrip("/") or "/"
        self._long: dict[CgroupPath, int] = {}  # cgroup -> open directory (long paths)
        # (cgroup, file) -> an fd kept open on it (:meth:`keep_open`)
        self._kept: dict[tuple[CgroupPath, str], int] = {}
        self._kernfs: bool | None = None  # the mount is a cgroup file system (looked once)
        self.keep_max: int | None = None  # files kept open at most (None: from the limit)

    # -- names -----------------------------------------------------------------
    def path(self, cg: CgroupPath) -> str:
        """The cgroup's directory as a path the kernel accepts.  Beyond
        :data:`LONG_PATH` bytes that is ``/proc/self/fd/N`` of the directory opened
        step by step (``openat``), so files below it stay reachable at any depth."""
        p = self._mount_str if cg == "/" else self._mount_str + cg
        if len(p) < LONG_PATH // 4 or len(p.encode("utf-8", "surrogateescape")) < LONG_PATH:
            return p
        try:
            return f"/proc/self/fd/{self._long_fd(cg)}"
        except OSError:  # gone, or not a directory: the long path fails as it would
            return p

    def dir_path(self, cg: CgroupPath) -> str:
        """:meth:`path` naming the directory itself even when it is reached through
        ``/proc/self/fd`` (whose last component is a link): for lstat and xattrs."""
        p = self.path(cg)
        return p + "/." if p.startswith("/proc/self/fd/") else p

    def _long_fd(self, cg: CgroupPath) -> int:
        fd = self._long.pop(cg, None)
        if fd is None:
            fd = self._open_long(cg)
        self._long[cg] = fd  # most recently used last
        while len(self._long) > _LONG_FDS:
            old = next(iter(self._long))
            os.close(self._long.pop(old))
        return fd

    def _open_long(self, cg: CgroupPath) -> int:
        """Open a directory whose path is too long for one system call: from the
        nearest ancestor already open (or short enough), a few components per openat."""
        names: list[str] = []
        cur: CgroupPath = cg
        while True:
            if cur in self._long:
                base = f"/proc/self/fd/{self._long[cur]}"
                break
            full = self._mount_str + cur
            if len(full.encode("utf-8", "surrogateescape")) < LONG_PATH or cur.parent is None:
                base = full
                break
            names.append(cur.name)
            cur = cur.parent
        names.reverse()
        fd = os.open(base, _DIR_FLAGS)
        try:
            i = 0
            while i < len(names):
                chunk: list[str] = []
                size = 0
                while i < len(names):
                    n = len(names[i].encode("utf-8", "surrogateescape")) + 1
                    if chunk and size + n >= LONG_PATH - 300:
                        break
                    chunk.append(names[i])
                    size += n
                    i += 1
                nfd = os.open("/".join(chunk), _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd

    def forget_long_paths(self) -> None:
        """Close the directories kept open for long paths (they may have been removed
        and made again meanwhile); every walk starts afresh."""
        for fd in self._long.values():
            os.close(fd)
        self._long.clear()

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
            fd = os.open(self._mount_str, _DIR_FLAGS)
        except OSError as exc:
            raise from_oserror(exc, self._mount_str, cgroup="/") from exc
        # one component at a time relative to the directory above (openat), so a name
        # of any depth or length is checked, not only those shorter than PATH_MAX
        try:
            root_dev = os.fstat(fd).st_dev
            current = self._mount_str
            for part in parts:
                current = f"{current}/{part}"
                try:
                    st = os.lstat(part, dir_fd=fd)
                except FileNotFoundError:
                    if name.startswith("/") and rel == name and os.path.isdir(name):
                        raise UsageProblem(
                            f"{name}: not in the memory cgroup hierarchy at {self._mount_str}"
                        ) from None
                    raise NoSuchCgroup(cg) from None
                except OSError as exc:
                    if exc.errno == errno.ENAMETOOLONG:  # longer than NAME_MAX: none such
                        raise NoSuchCgroup(cg) from None
                    raise from_oserror(exc, current, cgroup=cg) from exc
                if stat.S_ISLNK(st.st_mode):
                    raise UsageProblem(f"{name}: symbolic links are not followed")
                if not stat.S_ISDIR(st.st_mode):
                    raise NoSuchCgroup(cg, "not a cgroup directory")
                if st.st_dev != root_dev:
                    raise UsageProblem(f"{name}: crosses into another mount")
                try:
                    nfd = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                except OSError as exc:
                    raise from_oserror(exc, current, cgroup=cg) from exc
                os.close(fd)
                fd = nfd
        finally:
            os.close(fd)
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
            if exc.errno in _GONE:
                raise Vanished(cg) from exc
            raise
        return [cg.child(n) for n in sorted(names)]

    def node(self, cg: CgroupPath) -> tuple[os.stat_result, list[CgroupPath]]:
        """The cgroup directory's lstat and its children.  A kernfs directory's link
        count is 2 + its subdirectories, so a leaf (most cgroups) is never listed; any
        other count (a file system that does not keep it) lists the directory."""
        st = self._lstat(cg)
        self._seen(cg)
        if st.st_nlink == 2:
            return st, []
        return st, self.children(cg)

    def _seen(self, cg: CgroupPath) -> None:
        """Hook for :class:`CgroupFs`: a walk reached ``cg``."""

    def walk_nodes(
        self, cg: CgroupPath = ROOT
    ) -> Iterator[tuple[CgroupPath, os.stat_result, list[CgroupPath]]]:
        """Pre-order (cgroup, lstat, children), siblings by name; what vanishes
        meanwhile is skipped.  Iterative (see :meth:`walk`)."""
        self.forget_long_paths()
        stack = [cg]
        while stack:
            cur = stack.pop()
            try:
                st, kids = self.node(cur)
            except Vanished:
                continue
            yield cur, st, kids
            stack.extend(reversed(kids))

    def walk(self, cg: CgroupPath = ROOT) -> Iterator[CgroupPath]:
        """Pre-order walk, siblings by name; subtrees that vanish meanwhile are skipped.

        Iterative, with an explicit stack: a user may nest cgroups thousands deep (the
        kernel sets no depth limit on v1, and ``cgroup.max.depth`` is "max" by default
        on v2), which a recursive walk turns into a RecursionError.  The stack holds
        the cgroups still to visit, so memory grows with the tree's breadth, not with
        generator frames per level."""
        self.forget_long_paths()
        stack = [cg]
        while stack:
            cur = stack.pop()
            yield cur
            try:
                _, kids = self.node(cur)
            except Vanished:
                continue
            kids.reverse()
            stack.extend(kids)

    def _lstat(self, cg: CgroupPath) -> os.stat_result:
        try:
            return os.lstat(self.dir_path(cg))
        except OSError as exc:
            raise Vanished(cg) from exc

    def inode(self, cg: CgroupPath) -> int:
        """The cgroup directory's inode number (kernfs: increases with creation)."""
        return self._lstat(cg).st_ino

    # -- raw files -------------------------------------------------------------
    # Called every READS_PER_CALL file reads (None: nobody asked): the daemon beats its
    # heartbeat while one choice reads a tenant's thousands of cgroups (issue 22), so
    # that a long read is not taken for a hang.
    on_reads: Callable[[], None] | None = None
    _reads = 0

    def read(self, cg: CgroupPath, filename: str) -> str | None:
        """The file's text; None when this kernel/controller lacks the file.

        Raises :class:`Vanished` when the cgroup itself is gone.
        """
        if self.on_reads is not None:
            self._reads += 1
            if self._reads % READS_PER_CALL == 0:
                self.on_reads()
        if self._kept:
            fd = self._kept.get((cg, filename))
            if fd is not None:
                try:
                    return pread_bytes(fd).decode("utf-8", "replace")
                except OSError:
                    # removed (ENODEV), perhaps made again: read by its path, as ever
                    del self._kept[(cg, filename)]
                    os.close(fd)
        try:
            return read_text(f"{self.path(cg)}/{filename}")
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:  # path() could not open it: gone
                raise Vanished(cg) from exc
            if exc.errno in VANISHED_ERRNOS:
                if exc.errno == errno.ENOENT and os.path.isdir(self.path(cg)):
                    return None
                raise Vanished(cg) from exc
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return None
            raise

    # -- files kept open ---------------------------------------------------------
    def keep_open(self, cg: CgroupPath, filenames: tuple[str, ...]) -> None:
        """Keep these files of cg open: :meth:`read` is then one ``pread`` on each
        instead of open, read and close (the daemon's looks at a managed memcg: issue
        22, the valve's event to the signal).  Only on a cgroup file system, where a
        file of a removed cgroup fails to read (ENODEV) instead of keeping its last
        content; that read falls back to the path.  A file that cannot be opened is
        read by its path."""
        if not self._on_kernfs():
            return
        if self.keep_max is None:
            self.keep_max = keep_budget()
        for name in filenames:
            if (cg, name) in self._kept:
                continue
            if len(self._kept) >= self.keep_max:
                return  # read by path: the fds that must be had come first
            try:
                self._kept[(cg, name)] = os.open(f"{self.path(cg)}/{name}", _FILE_FLAGS)
            except OSError:
                continue

    def kept(self) -> set[tuple[CgroupPath, str]]:
        """(cgroup, file) of every file kept open."""
        return set(self._kept)

    def close_kept(
        self, cg: CgroupPath | None = None, filenames: tuple[str, ...] | None = None
    ) -> None:
        """Close what :meth:`keep_open` kept of cg (None: of every cgroup), these files
        of it or all."""
        for key in [
            k
            for k in self._kept
            if (cg is None or k[0] == cg) and (filenames is None or k[1] in filenames)
        ]:
            os.close(self._kept.pop(key))

    def _on_kernfs(self) -> bool:
        if self._kernfs is None:
            self._kernfs = mount_type(self._mount_str) in ("cgroup", "cgroup2")
        return self._kernfs

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

    # -- names of cgroups to create and join (``memcgctl run``) ----------------------
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
