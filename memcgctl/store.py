"""Where badness and OOM delay live (SPEC §2.3).

* Cgroups: extended attributes of the cgroup directory — ``trusted.memcgctl.*`` (root)
  and ``user.memcgctl.*`` (delegated subtrees).  A ``user.*`` value on cgroup C counts
  only when C's parent directory has the same owner as C: a delegatee ranks the cgroups
  *inside* its subtree but cannot promote the subtree's own root.  ``trusted.*`` wins.
* Processes: a registry file in the state directory keyed by (pid, start time, boot id),
  so a recycled pid never inherits a priority.  Writers take an flock and replace the
  file atomically; readers need no lock.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

from memcgctl.constants import BADNESS_DEFAULT, BADNESS_MIN, BADNESS_NEVER
from memcgctl.errors import OperationFailed, PermissionDenied, Vanished
from memcgctl.readers.cgroupfs import CgroupFs, parent_cgroup
from memcgctl.statedir import locked
from memcgctl.units import MAX_DELAY_MS

BADNESS = "memcgctl.badness"
OOM_DELAY = "memcgctl.oom_delay_ms"
NAMESPACES = ("trusted", "user")
_RANGES = {BADNESS: (BADNESS_MIN, BADNESS_NEVER), OOM_DELAY: (0, MAX_DELAY_MS)}


class Setting(NamedTuple):
    value: int | None  # None: unset
    source: str  # trusted | user | default


def _parse(raw: bytes | None, key: str) -> int | None:
    if raw is None:
        return None
    text = raw.decode("ascii", "replace").strip().rstrip("\0")
    if not (text.isascii() and text.isdigit()):  # int() would also take "５"
        return None
    value = int(text)
    lo, hi = _RANGES[key]
    return value if lo <= value <= hi else None


def delegation_allows_user(fs: CgroupFs, cg: str) -> bool:
    """True when C's parent directory has the same owner as C (see module doc)."""
    parent = parent_cgroup(cg)
    try:
        owner = fs.owner(cg)
        parent_owner = fs.owner(parent) if parent is not None else os.lstat(fs.mount.parent).st_uid
    except (Vanished, OSError):  # gone meanwhile: nothing to honour
        return False
    return owner == parent_owner


def read_setting(fs: CgroupFs, cg: str, key: str) -> Setting:
    value = _parse(fs.get_xattr(cg, f"trusted.{key}"), key)
    if value is not None:
        return Setting(value, "trusted")
    value = _parse(fs.get_xattr(cg, f"user.{key}"), key)
    if value is not None and delegation_allows_user(fs, cg):
        return Setting(value, "user")
    return Setting(None, "default")


def default_namespace() -> str:
    """trusted.* needs CAP_SYS_ADMIN; everyone else writes user.* on what they own."""
    return "trusted" if os.geteuid() == 0 else "user"


def write_setting(fs: CgroupFs, cg: str, key: str, value: int | None, namespace: str) -> None:
    """Set (or with None, remove) ``<namespace>.<key>`` on cgroup ``cg``."""
    if namespace not in NAMESPACES:
        raise ValueError(namespace)
    name = f"{namespace}.{key}"
    if value is None:
        fs.remove_xattr(cg, name)
    else:
        fs.set_xattr(cg, name, str(value).encode())


def cgroup_badness(fs: CgroupFs, cg: str) -> tuple[int, str]:
    s = read_setting(fs, cg, BADNESS)
    return (s.value, s.source) if s.value is not None else (BADNESS_DEFAULT, "default")


# -- the process registry -------------------------------------------------------

Key = tuple[int, int]  # (pid, start time in clock ticks)


class ProcessRegistry:
    """Process badness, keyed by pid and start time, for the current boot only."""

    FILE = "badness.json"
    LOCK = "badness.lock"

    def __init__(self, state_dir: Path, boot_id: str) -> None:
        self.state_dir = state_dir
        self.boot_id = boot_id
        self.path = state_dir / self.FILE

    def load(self) -> dict[Key, int]:
        """Entries of this boot.  A missing or unreadable file means "none"."""
        try:
            import json  # lazily, as only process badness needs it (SPEC §8)

            doc = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict) or doc.get("boot_id") != self.boot_id:
            return {}
        out: dict[Key, int] = {}
        for entry in doc.get("processes", []):
            try:
                pid, start, badness = (
                    int(entry["pid"]),
                    int(entry["start_time"]),
                    int(entry["badness"]),
                )
            except (KeyError, TypeError, ValueError):
                continue
            if BADNESS_MIN <= badness <= BADNESS_NEVER:
                out[(pid, start)] = badness
        return out

    def update(
        self,
        changes: dict[Key, int | None],
        is_alive: Callable[[int, int], bool],
    ) -> None:
        """Apply changes (None removes) and prune entries whose process is gone."""
        import json

        with locked(self.state_dir, self.LOCK):
            entries = self.load()
            for key, value in changes.items():
                if value is None:
                    entries.pop(key, None)
                else:
                    entries[key] = value
            entries = {k: v for k, v in entries.items() if is_alive(*k)}
            doc = {
                "version": 1,
                "boot_id": self.boot_id,
                "processes": [
                    {"pid": pid, "start_time": start, "badness": badness}
                    for (pid, start), badness in sorted(entries.items())
                ],
            }
            tmp = self.path.with_name(f".{self.FILE}.{os.getpid()}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, json.dumps(doc, indent=1).encode() + b"\n")
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
            except OSError as exc:
                with suppress(OSError):
                    os.unlink(tmp)
                if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise PermissionDenied(f"{self.path}: cannot write ({exc.strerror})") from exc
                raise OperationFailed(f"{self.path}: {exc.strerror}") from exc
