"""Where badness and OOM delay live.

* Cgroups: extended attributes of the cgroup directory — ``trusted.memcgctl.*`` (root)
  and ``user.memcgctl.*`` (delegated subtrees).  A ``user.*`` value on cgroup C counts
  only when C's parent directory has the same owner as C: a delegatee ranks the cgroups
  *inside* its subtree but cannot promote the subtree's own root.  ``trusted.*`` wins.
* Processes: a registry file in the state directory keyed by (pid, start time, boot id),
  so a recycled pid never inherits a priority.  Writers take an flock (with a timeout)
  and replace the file atomically (mkstemp + rename); readers need no lock.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.state.statedir import (
    LOCK_TIMEOUT_S,
    Corrupt,
    Warn,
    check_state_dir,
    loads_bounded,
    locked,
    read_bounded,
    set_aside,
    stderr_warning,
    write_atomic,
)
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.constants import BADNESS_MIN, BADNESS_NEVER
from memcgctl.vocab.errors import MemcgctlError, OperationFailed, PermissionDenied, Vanished
from memcgctl.vocab.podname import parse_pod_label
from memcgctl.vocab.structs import NamedTuple
from memcgctl.vocab.units import MAX_DELAY_MS

BADNESS = "memcgctl.badness"
OOM_DELAY = "memcgctl.oom_delay_ms"
# "namespace/name" of the Kubernetes pod a cgroup belongs to, written by `memcgctl kube`
POD = "memcgctl.pod"
NAMESPACES = ("trusted", "user")
# beside a value a rule wrote (memcgctl apply, the daemon): the rule's name
RULE_MARKS = {BADNESS: "memcgctl.badness_rule", OOM_DELAY: "memcgctl.oom_delay_ms_rule"}
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


def delegation_allows_user(fs: CgroupFs, cg: CgroupPath) -> bool:
    """True when C's parent directory has the same owner as C (see module doc)."""
    parent = cg.parent
    try:
        owner = fs.owner(cg)
        parent_owner = fs.owner(parent) if parent is not None else os.lstat(fs.mount.parent).st_uid
    except (Vanished, OSError):  # gone meanwhile: nothing to honour
        return False
    return owner == parent_owner


def delegation_root(fs: CgroupFs, cg: CgroupPath) -> CgroupPath:
    """The top of the delegation ``cg`` lies in: its highest ancestor (or ``cg``) reached
    through directories that all have ``cg``'s owner.  A ``user.*`` setting on ``cg``
    may act on this subtree only (SPEC §2.3): above it is a cgroup its owner does not
    own.  Raises Vanished when ``cg`` is gone."""
    owner = fs.owner(cg)
    top = cg
    while top.parent is not None:
        try:
            if fs.owner(top.parent) != owner:
                break
        except (Vanished, OSError):
            break
        top = top.parent
    return top


def read_setting(fs: CgroupFs, cg: CgroupPath, key: str) -> Setting:
    value = _parse(fs.get_xattr(cg, f"trusted.{key}"), key)
    if value is not None:
        return Setting(value, "trusted")
    value = _parse(fs.get_xattr(cg, f"user.{key}"), key)
    if value is not None and delegation_allows_user(fs, cg):
        return Setting(value, "user")
    return Setting(None, "default")


def read_namespace(fs: CgroupFs, cg: CgroupPath, key: str, namespace: str) -> int | None:
    """The value of ``<namespace>.<key>`` alone (None: unset or not a valid value);
    for a writer that owns that one attribute (``memcgctl kube``)."""
    if namespace not in NAMESPACES:
        raise ValueError(namespace)
    return _parse(fs.get_xattr(cg, f"{namespace}.{key}"), key)


def read_pod(fs: CgroupFs, cg: CgroupPath, namespace: str = "trusted") -> str | None:
    """The pod label ``<namespace>.memcgctl.pod`` on ``cg`` (None: none, or not a
    Kubernetes-shaped ``namespace/name``)."""
    if namespace not in NAMESPACES:
        raise ValueError(namespace)
    return parse_pod_label(fs.get_xattr(cg, f"{namespace}.{POD}"))


def pod_beside(fs: CgroupFs, cg: CgroupPath, badness: Setting) -> str | None:
    """The pod label written next to the badness ``badness`` was read from: in the same
    namespace (a ``user.*`` one only where the delegation rule let that badness count),
    one getxattr, and none at all on a cgroup without a badness (``memcgctl kube``
    writes the two together)."""
    if badness.source not in NAMESPACES:
        return None
    return read_pod(fs, cg, badness.source)


def default_namespace() -> str:
    """trusted.* needs CAP_SYS_ADMIN; everyone else writes user.* on what they own."""
    return "trusted" if os.geteuid() == 0 else "user"


def write_setting(
    fs: CgroupFs, cg: CgroupPath, key: str, value: int | None, namespace: str
) -> None:
    """Set (or with None, remove) ``<namespace>.<key>`` on cgroup ``cg``."""
    if namespace not in NAMESPACES:
        raise ValueError(namespace)
    name = f"{namespace}.{key}"
    if value is None:
        fs.remove_xattr(cg, name)
    else:
        fs.set_xattr(cg, name, str(value).encode())
    if key in RULE_MARKS:  # set by hand now: explicit, a rule no longer rewrites it
        fs.remove_xattr(cg, f"{namespace}.{RULE_MARKS[key]}")


# -- the process registry -------------------------------------------------------

Key = tuple[int, int]  # (pid, start time in clock ticks)


class Entry(NamedTuple):
    badness: int
    # when it was set, in clock ticks since boot (the unit of a start time), so that
    # only children forked after it inherit it; None: written by an older version
    set_at: int | None = None


def uptime_ticks(proc_root: str = "/proc") -> int | None:
    """Clock ticks since boot (CLOCK_BOOTTIME, the clock of /proc/PID/stat's start
    time), from ``PROC/uptime``."""
    try:
        with open(f"{proc_root}/uptime", "rb") as f:
            seconds = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return int(seconds * os.sysconf("SC_CLK_TCK"))


class ProcessRegistry:
    """Process badness, keyed by pid and start time, for the current boot only.

    A corrupt file (garbage, truncated, wrong types, huge or deeply nested) is reported
    once through ``warn`` and moved aside as ``badness.json.corrupt-TIME`` — never
    treated as empty and overwritten.  Malformed entries in an otherwise good file are
    skipped with a warning: the original is saved aside and the valid entries kept."""

    FILE = "badness.json"
    LOCK = "badness.lock"
    MAX_BYTES = 16 << 20  # ~250,000 entries

    def __init__(
        self,
        state_dir: Path,
        boot_id: str,
        warn: Warn | None = None,
        lock_timeout: float = LOCK_TIMEOUT_S,
        clock: Callable[[], int | None] = uptime_ticks,
    ) -> None:
        self.state_dir = state_dir
        self.clock = clock
        self.boot_id = boot_id
        self.path = state_dir / self.FILE
        self.warn = warn if warn is not None else stderr_warning
        self.lock_timeout = lock_timeout
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warn(message)

    def _parse(self, data: bytes) -> tuple[dict[Key, Entry], int]:
        """(entries of this boot, number of malformed entries); Corrupt for a file that
        is not a registry at all."""
        doc = loads_bounded(data)
        if not isinstance(doc, dict):
            raise Corrupt("not a JSON object")
        boot, procs = doc.get("boot_id"), doc.get("processes", [])
        if not isinstance(boot, str) or not isinstance(procs, list):
            raise Corrupt("wrong types for boot_id/processes")
        if boot != self.boot_id:
            return {}, 0  # an earlier boot's: stale, not corrupt
        out: dict[Key, Entry] = {}
        bad = 0
        for entry in procs:
            if not isinstance(entry, dict):
                bad += 1
                continue
            values = (entry.get("pid"), entry.get("start_time"), entry.get("badness"))
            if not all(type(v) is int for v in values):  # not bool, float, 1e400, None
                bad += 1
                continue
            pid, start, badness = (int(v) for v in values)  # type: ignore[arg-type]
            if pid <= 0 or start < 0 or not BADNESS_MIN <= badness <= BADNESS_NEVER:
                bad += 1
                continue
            set_at = entry.get("set_at")
            if set_at is not None and (type(set_at) is not int or set_at < 0):
                bad += 1
                continue
            out[(pid, start)] = Entry(badness, set_at)
        return out, bad

    def _read(self) -> tuple[dict[Key, Entry], bytes | None, str | None]:
        """(valid entries, the file's bytes, what is wrong with it or None).

        Raises Corrupt (with no entries to keep) for a file that is not a registry."""
        if not check_state_dir(self.state_dir):
            return {}, None, None
        try:
            data = read_bounded(self.path, self.MAX_BYTES)
        except IsADirectoryError:
            return {}, None, None
        except PermissionError:
            # root's registry, read by another user: nothing to honour, but say so once
            # (the badness shown would otherwise silently differ from what root sees)
            self._warn_once(
                "unreadable",
                f"{self.path}: not readable by uid {os.geteuid()}; process badness "
                "registered there is not shown (run as its owner, or pass --state-dir)",
            )
            return {}, None, None
        if data is None:
            return {}, None, None
        entries, bad = self._parse(data)
        if not bad:
            return entries, data, None
        noun = "entry" if bad == 1 else "entries"
        return entries, data, f"{bad} malformed {noun} skipped, {len(entries)} kept"

    def load(self) -> dict[Key, int]:
        """Badness by (pid, start time), this boot's (see :meth:`load_entries`)."""
        return {k: e.badness for k, e in self.load_entries().items()}

    def load_entries(self) -> dict[Key, Entry]:
        """Entries of this boot.  A missing or unreadable file means "none"; a corrupt
        one is reported once and moved aside (best effort: if that is not possible now,
        the next update does it)."""
        try:
            entries, _, problem = self._read()
        except Corrupt as exc:
            self._set_aside_corrupt(exc.reason)
            return {}
        except OSError:
            return {}
        if problem is not None:
            self._repair(problem)
        return entries

    def _document(self, entries: dict[Key, Entry]) -> bytes:
        import json

        procs: list[dict[str, int]] = []
        for (pid, start), e in sorted(entries.items()):
            item = {"pid": pid, "start_time": start, "badness": e.badness}
            if e.set_at is not None:
                item["set_at"] = e.set_at
            procs.append(item)
        doc = {"version": 1, "boot_id": self.boot_id, "processes": procs}
        return json.dumps(doc, indent=1).encode() + b"\n"

    def _repair(self, problem: str) -> None:
        """Keep the valid entries, save the original aside (under the lock, waiting
        only briefly); warn once either way."""
        where = "left in place (could not repair it now)"
        with (
            suppress(MemcgctlError, OSError, Corrupt),
            locked(self.state_dir, self.LOCK, min(self.lock_timeout, 0.5)),
        ):
            entries, original, now = self._read()
            if now is None or original is None:
                return  # repaired meanwhile
            target = set_aside(self.path, original)
            write_atomic(self.path, self._document(entries))
            where = f"the original is saved as {target.name}"
        self._warn_once("partial", f"{self.path}: {problem}; {where}")

    def _set_aside_corrupt(self, reason: str) -> None:
        """Move a corrupt registry aside under the lock (waiting briefly), re-checking
        that the file there is still corrupt; warn once either way."""
        where = "left in place (could not move it aside now)"
        with (
            suppress(MemcgctlError, OSError),
            locked(self.state_dir, self.LOCK, min(self.lock_timeout, 0.5)),
        ):
            try:
                self._read()
                return  # repaired meanwhile by another writer
            except Corrupt:
                target = set_aside(self.path)
                where = f"moved aside as {target.name}"
        self._warn_once("corrupt", f"{self.path}: corrupt ({reason}); {where}")

    def update(
        self,
        changes: dict[Key, int | None],
        is_alive: Callable[[int, int], bool],
    ) -> None:
        """Apply changes (None removes) and prune entries whose process is gone.

        Waits for the lock at most ``lock_timeout`` (LockTimeout, exit 1)."""
        with locked(self.state_dir, self.LOCK, self.lock_timeout):
            try:
                try:
                    entries, original, problem = self._read()
                except Corrupt as exc:
                    target = set_aside(self.path)  # first: never overwrite it
                    self._warn_once(
                        "corrupt",
                        f"{self.path}: corrupt ({exc.reason}); moved aside as {target.name}",
                    )
                    entries, original, problem = {}, None, None
                if problem is not None and original is not None:
                    target = set_aside(self.path, original)
                    self._warn_once(
                        "partial", f"{self.path}: {problem}; the original is saved as {target.name}"
                    )
                now = self.clock()
                for key, value in changes.items():
                    if value is None:
                        entries.pop(key, None)
                    else:  # a changed value keeps the first set_at: same family
                        old = entries.get(key)
                        kept = old.set_at if old is not None and old.set_at is not None else now
                        entries[key] = Entry(value, kept)
                entries = {k: v for k, v in entries.items() if is_alive(*k)}
                write_atomic(self.path, self._document(entries))
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise PermissionDenied(f"{self.path}: cannot write ({exc.strerror})") from exc
                raise OperationFailed(f"{self.path}: {exc.strerror}") from exc

    def check_writable(self) -> None:
        """Raise (exit 4 and friends) unless an update could be written now: the
        directory is acceptable and ours to write, the lock can be had.  ``run`` calls
        it before changing anything."""
        with locked(self.state_dir, self.LOCK, self.lock_timeout):
            if not os.access(self.state_dir, os.W_OK | os.X_OK):
                raise PermissionDenied(f"{self.state_dir}: permission denied (not writable)")
