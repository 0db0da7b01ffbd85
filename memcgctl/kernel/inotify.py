"""A raw inotify(7) instance: one fd, watches added and removed by path, events read
in batches.  Through libc (kernel/libc.py), like :class:`~memcgctl.kernel.notify.DirWatch`:
the standard library has no inotify, and the three calls do not justify a dependency.

What the cgroup filesystems report (kernfs, v1 and v2 alike; checked on this kernel by
tests/test_treewatch_kernel.py and in the guest by tests/v2/test_treewatch_v2.py):

* ``mkdir``/``rmdir`` of a cgroup: ``IN_CREATE``/``IN_DELETE`` with ``IN_ISDIR`` on the
  parent (the VFS's ``vfs_mkdir`` → ``fsnotify_mkdir`` and ``vfs_rmdir`` →
  ``fsnotify_rmdir``, generic for every filesystem); the removed directory's own watch
  then reports ``IN_IGNORED``.  A v1 rename (``cgroup1_rename``) is ``IN_MOVED_FROM`` +
  ``IN_MOVED_TO``.
* ``setxattr``/``removexattr`` on a cgroup directory (the badness, the OOM delay, our
  marks): ``IN_ATTRIB`` on the directory (``fs/xattr.c``: ``__vfs_setxattr_noperm`` and
  ``__vfs_removexattr_locked`` call ``fsnotify_xattr``), as do chmod and chown.
* ``write(2)`` to a cgroup file (``memory.high`` by systemd): ``IN_MODIFY`` on the file
  (``vfs_write`` → ``fsnotify_modify`` on success).  The kernel's own updates of a file
  (``memory.events``, ``cgroup.events``) go through ``kernfs_notify`` and also report
  ``IN_MODIFY`` — on the file and to a watch of its directory that asks for it: a
  directory watch here never asks for ``IN_MODIFY``.

The kernel creates a new cgroup's files itself (kernfs, not the VFS): no ``IN_CREATE``
for them.  Watches count against ``fs.inotify.max_user_watches`` (per user): adding
one past it fails with ENOSPC, which :meth:`Inotify.add` raises as :class:`WatchLimit`.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

from memcgctl.vocab.structs import dataclass

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_MASK_ADD = 0x20000000
IN_ISDIR = 0x40000000

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)
READ_SIZE = 65536  # bytes read per batch: ~2,000 events of cgroup-sized names


MAX_USER_WATCHES = "/proc/sys/fs/inotify/max_user_watches"


def max_user_watches(path: str = MAX_USER_WATCHES) -> int:
    """fs.inotify.max_user_watches (8,192 where it cannot be read: the old default)."""
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 8192


class WatchLimit(OSError):
    """fs.inotify.max_user_watches reached (ENOSPC from inotify_add_watch)."""


@dataclass(frozen=True)
class Event:
    wd: int
    mask: int
    cookie: int
    name: str


def parse(data: bytes) -> Iterator[Event]:
    """The events in one read(2) of an inotify fd."""
    off = 0
    while off + _HEADER.size <= len(data):
        wd, mask, cookie, length = _HEADER.unpack_from(data, off)
        off += _HEADER.size
        raw = data[off : off + length].split(b"\0", 1)[0]
        off += length
        yield Event(wd, mask, cookie, os.fsdecode(raw))


class Inotify:
    """One inotify instance (non-blocking, close-on-exec)."""

    def __init__(self) -> None:
        from memcgctl.kernel.libc import Libc, errno

        self._libc = Libc()
        self._get_errno = errno
        fd = int(self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if fd < 0:
            err = self._get_errno()
            raise OSError(err, os.strerror(err))
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def add(self, path: str, mask: int) -> int:
        """A watch on path; its watch descriptor (the same one again for a path already
        watched: the mask is replaced).  :class:`WatchLimit` when the user's watches
        are used up; OSError (ENOENT, ENOTDIR, ENAMETOOLONG...) otherwise."""
        wd = int(self._libc.inotify_add_watch(self._fd, os.fsencode(path), mask))
        if wd < 0:
            err = self._get_errno()
            if err == 28:  # ENOSPC
                raise WatchLimit(err, "inotify watches used up (fs.inotify.max_user_watches)")
            raise OSError(err, os.strerror(err), path)
        return wd

    def remove(self, wd: int) -> None:
        """Drop a watch (nothing if the kernel dropped it already: IN_IGNORED)."""
        self._libc.inotify_rm_watch(self._fd, wd)

    def read(self) -> list[Event]:
        """The events queued now (one batch, at most :data:`READ_SIZE` bytes); [] when
        none."""
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return []
        return list(parse(data))

    def pending(self) -> bool:
        """Events are queued that nobody has read yet (one poll(2), no wait)."""
        import select

        p = select.poll()
        p.register(self._fd, select.POLLIN)
        return bool(p.poll(0))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
