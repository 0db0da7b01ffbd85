"""Finding the memory-cgroup hierarchy: which mount, which cgroup version.

:func:`detect_hierarchy` reads ``/proc/self/mountinfo`` and picks the cgroup2 mount
with the memory controller, else the v1 ``memory`` mount; :func:`find_v1_mount` finds
another v1 controller's mount (the freezer); :func:`hierarchy_at` describes a mount the
user named (``--cgroup-root``).  The result is a :class:`Hierarchy`, which
:class:`~memcgctl.kernel.cgroupfs.CgroupFs` is built with.
"""

from __future__ import annotations

import os
from pathlib import Path

from memcgctl.kernel.cgroupfiles import V1_LIMIT, V2_CONTROLLERS
from memcgctl.kernel.fileio import read_text
from memcgctl.vocab.errors import NoSuchCgroup, NotSupported, from_oserror
from memcgctl.vocab.structs import NamedTuple


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


def mount_type(path: str) -> str | None:
    """The file-system type of the mount that holds ``path`` (the deepest mount point
    at or above it) in this process's ``/proc/self/mountinfo``; None when unreadable.
    The real one, not a fixture's: it tells a cgroup file system from a fixture tree."""
    try:
        text = read_text("/proc/self/mountinfo")
    except OSError:
        return None
    found, depth = None, -1
    for fstype, mountpoint, _, _ in parse_mountinfo(text):
        top = mountpoint.rstrip("/")
        if (path == mountpoint or path.startswith(top + "/")) and len(top) > depth:
            found, depth = fstype, len(top)
    return found


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
