"""The append-only journal in the state directory.

JSON lines, one event each: kills memcgctl performed (kill-all, daemon; ``kind:
user_kill`` and daemon decisions) and every kernel OOM kill memcgctl has seen in the
kernel log (deduplicated by boot id + the kmsg sequence number, the ``dedup`` key).

* Concurrent writers: an flock on ``journal.lock`` around every append, taken with a
  timeout (``LockTimeout``); a kill never waits on it for long.
* Crash mid-write: a torn last line is skipped by readers, and the next writer starts
  on a fresh line.
* Hostile or corrupt content: lines that are not records of ours (garbage,
  wrong types such as ``"kind": null``, huge or deeply nested) are skipped with one
  warning; the good records are kept, and the original is saved aside as
  ``journal.jsonl.corrupt-TIME`` while the file is rewritten with the good lines only.
* Files are opened with ``O_NOFOLLOW`` and created ``0600``.
* Bounded: when the file passes ``max_bytes`` it is renamed to ``journal.jsonl.1`` and
  a new file is started; the records of the previous ``.1`` move into
  ``journal.jsonl.2``, at most ``max_bytes`` shared fairly per owner
  (``memcgctl.state.retention``), so one user's flood cannot erase another's history.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from memcgctl.state.journallines import MAX_FILE_BYTES, iter_file, scan_lines
from memcgctl.state.retention import OwnerOf, fair_share, per_cgroup
from memcgctl.state.statedir import (
    LOCK_TIMEOUT_S,
    Corrupt,
    Warn,
    check_state_dir,
    loads_bounded,
    locked,
    open_append,
    read_bounded,
    set_aside,
    stderr_warning,
    write_atomic,
)
from memcgctl.vocab.errors import MemcgctlError, from_oserror

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from memcgctl.vocab.records import Event

DEFAULT_MAX_BYTES = 4 << 20
MAX_BYTES_ENV = "MEMCGCTL_JOURNAL_MAX_BYTES"


def max_bytes_from_env() -> int:
    """The journal's size cap: ``MEMCGCTL_JOURNAL_MAX_BYTES`` (bytes, or with a unit:
    64K, 4M), else 4 MiB.  A value that is no size is a usage error (exit 2)."""
    raw = os.environ.get(MAX_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    from memcgctl.vocab.errors import UsageProblem

    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    number, unit = raw.rstrip("KMGkmgiB"), raw[len(raw.rstrip("KMGkmgiB")) :]
    unit = unit.upper().removesuffix("IB").removesuffix("B")
    if not number.isdigit() or unit not in units or int(number) * units[unit] < 4096:
        raise UsageProblem(
            f"{MAX_BYTES_ENV}={raw}: not a size of at least 4096 bytes (e.g. 65536, 64K, 4M)"
        )
    return min(int(number) * units[unit], MAX_FILE_BYTES // 2)


class Journal:
    FILE = "journal.jsonl"
    LOCK = "journal.lock"

    def __init__(
        self,
        state_dir: Path,
        max_bytes: int | None = None,
        warn: Warn | None = None,
        lock_timeout: float = LOCK_TIMEOUT_S,
        boot_id: str | None = None,
        owner_of: OwnerOf | None = None,
    ) -> None:
        self.state_dir = state_dir
        # whose history a record is, for the fair share of journal.jsonl.2
        self.owner_of = owner_of if owner_of is not None else per_cgroup
        # the boot fresh totals are for (None: whoever reads them first decides)
        self.boot_id = boot_id
        self.path = state_dir / self.FILE
        self.rotated = state_dir / (self.FILE + ".1")
        self.older = state_dir / (self.FILE + ".2")
        self.max_bytes = max_bytes if max_bytes is not None else max_bytes_from_env()
        self.warn = warn if warn is not None else stderr_warning
        self.lock_timeout = lock_timeout
        self._warned: set[str] = set()
        self._held = False

    @contextmanager
    def _locked(self, timeout: float) -> Iterator[None]:
        """The journal lock, re-entrant within this object (append → read → repair)."""
        if self._held:
            yield
            return
        with locked(self.state_dir, self.LOCK, timeout):
            self._held = True
            try:
                yield
            finally:
                self._held = False

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.warn(message)

    def _load(self, path: Path, torn_ok: bool = True) -> tuple[list[Event], bytes, int]:
        """(good records, the file's bytes, bad lines); Corrupt for a file that is not
        a journal at all (a symlink, a FIFO, far too large)."""
        try:
            data = read_bounded(path, MAX_FILE_BYTES)
        except OSError:
            return [], b"", 0
        if data is None:
            return [], b"", 0
        good, _, bad = scan_lines(data, torn_ok)
        return good, data, bad

    def read(self) -> Iterator[Event]:
        """All records, oldest first (the rotated file, then the current one).  Bad
        lines are skipped with one warning per file, and the file is repaired (best
        effort: the original saved aside, the good lines kept)."""
        if not check_state_dir(self.state_dir):
            return iter(())
        out: list[Event] = []
        for path in (self.older, self.rotated, self.path):
            try:
                good, _, bad = self._load(path)
            except Corrupt as exc:
                self._set_aside_whole(path, exc.reason)
                continue
            out += good
            if bad:
                self._repair(path, bad, len(good))
        return iter(out)

    def iter_read(self) -> Iterator[Event]:
        """:meth:`read`, one record at a time (memory: one chunk of a file and one
        record, for ``events`` over a journal of any size): the same records, warnings
        and repairs, each file repaired once it has been read through."""
        if not check_state_dir(self.state_dir):
            return
        for path in (self.older, self.rotated, self.path):
            good = bad = 0
            try:
                for rec in iter_file(path):
                    if rec is None:
                        bad += 1
                    else:
                        good += 1
                        yield rec
            except Corrupt as exc:
                self._set_aside_whole(path, exc.reason)
                continue
            if bad:
                self._repair(path, bad, good)

    def _set_aside_whole(self, path: Path, reason: str) -> None:
        where = "ignored (could not move it aside now)"
        with (
            suppress(MemcgctlError, OSError),
            self._locked(min(self.lock_timeout, 0.5)),
        ):
            try:
                self._load(path)
                return  # replaced meanwhile
            except Corrupt:
                where = f"moved aside as {set_aside(path).name}"
        self._warn_once(str(path), f"{path}: corrupt ({reason}); {where}")

    def _repair(self, path: Path, bad: int, kept: int) -> None:
        """Save the original aside and keep only the good lines (under the lock, which
        we wait for only briefly: a reader must not hang on a writer)."""
        noun = "record" if bad == 1 else "records"
        where = "left in place (could not repair it now)"
        with (
            suppress(MemcgctlError, OSError),
            self._locked(min(self.lock_timeout, 0.5)),
        ):
            data = read_bounded(path, MAX_FILE_BYTES)
            if data is None:
                return
            _, lines, bad_now = scan_lines(data, torn_ok=False)
            if not bad_now:
                return
            target = set_aside(path, data)
            write_atomic(path, b"".join(line + b"\n" for line in lines))
            where = f"the original is saved as {target.name}"
        self._warn_once(str(path), f"{path}: skipped {bad} corrupt {noun}, kept {kept}; {where}")

    # -- the running totals (counters.json, memcgctl.state.totals) ----------------------------

    def _load_totals(self) -> dict[str, Any] | None:
        """The totals file, or None (missing; corrupt: warned once and moved aside)."""
        from memcgctl.state import totals

        path = self.state_dir / totals.FILE
        try:
            return totals.load(self.state_dir)
        except OSError:
            return None
        except Corrupt as exc:
            where = "ignored (could not move it aside)"
            with suppress(OSError):
                where = f"moved aside as {set_aside(path).name}"
            self._warn_once(str(path), f"{path}: corrupt ({exc.reason}); {where}; rebuilt")
            return None

    def _totals_locked(
        self, boot_id: str | None = None, boot_time: float | None = None
    ) -> tuple[dict[str, Any], bool]:
        """(totals, whether they changed and must be saved), under the lock.  Rebuilt
        from the whole journal (once) when missing or corrupt, or, with ``boot_id``,
        of another boot.  Totals of no known boot (begun by a writer that did not know
        it) that began after ``boot_time`` are this boot's: adopted, not rebuilt."""
        from memcgctl.state import totals

        doc = self._load_totals()
        if doc is not None and (boot_id is None or doc.get("boot_id") == boot_id):
            return doc, False
        if (
            doc is not None
            and doc.get("boot_id") is None
            and boot_time is not None
            and doc["created"] >= boot_time
        ):
            doc["boot_id"] = boot_id
            return doc, True
        if doc is None and not self.path.exists() and not self.rotated.exists():
            return totals.empty(boot_id or self.boot_id), True
        boot_iso = None
        if boot_time is not None:
            from memcgctl.logic.kmsgparse import usec_to_iso

            boot_iso = usec_to_iso(0, boot_time)
        return totals.rebuild(self.read(), boot_id, boot_iso), True

    def _save_totals(self, doc: dict[str, Any]) -> None:
        from memcgctl.state import totals

        path = self.state_dir / totals.FILE
        try:
            write_atomic(path, totals.dumps(doc))
        except OSError as exc:
            self._warn_once(f"save:{path}", f"{path}: could not save the kill totals: {exc}")

    def totals(self, boot_id: str | None = None, boot_time: float | None = None) -> dict[str, Any]:
        """The running kill totals (a new epoch, rebuilt from this boot's journal
        records, when they belong to another boot or were lost).  Without a state
        directory: empty totals, nothing created."""
        from memcgctl.state import totals

        if not check_state_dir(self.state_dir):
            return totals.empty(boot_id)
        doc = self._load_totals()
        if doc is not None and (boot_id is None or doc.get("boot_id") == boot_id):
            return doc
        try:
            with self._locked(self.lock_timeout):
                doc, changed = self._totals_locked(boot_id, boot_time)
                if changed:
                    self._save_totals(doc)
                return doc
        except OSError as exc:
            raise from_oserror(exc, str(self.state_dir)) from exc

    def attribute(
        self, local_kills: dict[str, int], attempt: list[int] | None = None
    ) -> dict[str, Any]:
        """Give unattributed kernel kills their cgroups from the kernel's per-cgroup
        counters (:func:`memcgctl.state.totals.attribute`); returns the totals.  ``attempt``
        (journal records, host oom_kill) is remembered: while neither moves, another
        try cannot attribute more, and callers skip it."""
        from memcgctl.state import totals

        with self._locked(self.lock_timeout):
            doc, _ = self._totals_locked()
            changed = totals.attribute(doc, local_kills) > 0
            if attempt is not None and doc.get("attempt") != attempt:
                doc["attempt"] = attempt
                changed = True
            if changed:
                self._save_totals(doc)
            return doc

    def append(self, records: Iterable[Event], timeout: float | None = None) -> list[Event]:
        """Append records; those whose ``dedup`` key was journaled already are dropped
        (the bounded index of the totals file: no journal scan), and add them to the
        running totals.

        Waits for the journal lock at most ``timeout`` seconds (default: the journal's
        ``lock_timeout``), then raises LockTimeout.  Returns the records written."""
        from memcgctl.state import totals

        records = list(records)
        if not records:
            return []
        wait = self.lock_timeout if timeout is None else timeout
        with self._locked(wait):
            doc, _ = self._totals_locked()
            fresh = []
            for r in records:
                key = r.get("dedup")
                if key is not None:
                    if totals.seen(doc, str(key)):
                        continue
                    totals.remember(doc, str(key))
                fresh.append(r)
            records = fresh
            if not records:
                return []
            payload = b"".join(
                json.dumps(r, separators=(",", ":"), sort_keys=True).encode() + b"\n"
                for r in records
            )
            try:
                self._rotate_if_needed(len(payload))
                fd = open_append(self.path)
                try:
                    size = os.fstat(fd).st_size
                    # start on a fresh line if a writer crashed mid-line
                    if size and os.pread(fd, 1, size - 1) != b"\n":
                        payload = b"\n" + payload
                    os.write(fd, payload)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise from_oserror(exc, str(self.path)) from exc
            for r in records:
                totals.count(doc, r)
            self._save_totals(doc)
        return records

    # -- the kernel-log cursor ------------------------------------------------------------
    # Every kernel kill up to this kmsg sequence number (of this boot) is in the journal,
    # so ``counters`` need not parse those records again: it still reads the ring, but
    # parses only what came after (counters must start fast).

    CURSOR = "kmsg.cursor"

    def read_cursor(self, boot_id: str) -> int | None:
        """The cursor of this boot, or None (missing, another boot's, or corrupt:
        a corrupt one is reported once and moved aside)."""
        path = self.state_dir / self.CURSOR
        try:
            if not check_state_dir(self.state_dir):
                return None
            data = read_bounded(path, 4096)
            if data is None:
                return None
            doc = loads_bounded(data)
            if not isinstance(doc, dict) or not isinstance(doc.get("boot_id"), str):
                raise Corrupt("not a cursor")
            seq = doc.get("seq")
            if type(seq) is not int or seq < 0:
                raise Corrupt("the sequence number is not a whole number")
        except OSError:
            return None
        except Corrupt as exc:
            self.discard_cursor(exc.reason)
            return None
        return seq if doc["boot_id"] == boot_id else None

    def discard_cursor(self, reason: str) -> None:
        """Move a cursor that cannot be trusted aside (best effort), warning once."""
        path = self.state_dir / self.CURSOR
        where = "ignored"
        with (
            suppress(MemcgctlError, OSError),
            self._locked(min(self.lock_timeout, 0.5)),
        ):
            where = f"moved aside as {set_aside(path).name}"
        self._warn_once(str(path), f"{path}: {reason}; {where}")

    def write_cursor(self, boot_id: str, seq: int) -> None:
        """Record that every kill up to ``seq`` is journaled (never moves backwards)."""
        with self._locked(self.lock_timeout):
            current = self.read_cursor(boot_id)
            if current is not None and current >= seq:
                return
            path = self.state_dir / self.CURSOR
            try:
                write_atomic(path, json.dumps({"boot_id": boot_id, "seq": seq}).encode())
            except OSError as exc:
                raise from_oserror(exc, str(path)) from exc

    def _rotate_if_needed(self, incoming: int = 0) -> None:
        """Rotate before the file would pass the cap with ``incoming`` bytes more (a
        batch of records from the writer thread): each file stays within the cap unless
        one batch alone is bigger."""
        try:
            size = os.lstat(self.path).st_size
        except FileNotFoundError:
            return
        if size >= self.max_bytes or (size and size + incoming > self.max_bytes):
            self._keep_fair_share()
            os.replace(self.path, self.rotated)

    def _keep_fair_share(self) -> None:
        """Merge the records leaving ``.1`` into ``.2``, keeping at most ``max_bytes``
        split equally per owner (newest first): one owner's flood evicts only its own."""
        records: list[Event] = []
        lines: list[bytes] = []
        for path in (self.older, self.rotated):
            try:
                data = read_bounded(path, MAX_FILE_BYTES)
            except (OSError, Corrupt):
                continue
            if data:
                good, kept, _ = scan_lines(data, torn_ok=False)
                records += good
                lines += kept
        if not records:
            return
        keep = fair_share(records, lines, self.max_bytes, self.owner_of)
        write_atomic(self.older, b"".join(line + b"\n" for line in keep))
