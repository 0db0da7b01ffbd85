"""Reading the journal for one subtree without parsing all of it (the reading side only).

``events CG`` (the history) needs the journal's records about CG, and the journal copies
of the kernel kills it shows (to merge each kill once).  Every such record's JSON line
holds CG's path as bytes: :func:`read_matching` scans the files for them in C
(``bytes.find`` over 1 MiB chunks) and parses only the lines that hold them.  A journal of 100 k records for other cgroups then costs a scan,
not 100 k JSON parses, and the memory of one chunk, not of the file.

The writer (:class:`memcgctl.state.journal.Journal`) writes ``json.dumps`` lines with
ASCII escapes; a needle that JSON would escape (a quote, a backslash, control or
non-ASCII characters) is not searched for: the caller reads the whole journal instead
(``None``).  So is a file that is not a plain journal file (a symlink, a FIFO, far too
large) or a matching line that is not a record: the whole read warns, repairs and sets
aside as it always did.
"""

from __future__ import annotations

import os
import stat
from contextlib import suppress
from typing import TYPE_CHECKING

from memcgctl.state.journallines import MAX_FILE_BYTES, scan_lines
from memcgctl.state.statedir import check_state_dir
from memcgctl.vocab.records import Event

if TYPE_CHECKING:
    from memcgctl.state.journal import Journal

CHUNK = 1 << 20


class _Fallback(Exception):
    """Read the whole journal instead."""


def _needle(text: str) -> bytes | None:
    if not text or not text.isascii() or any(c in text for c in '"\\') or not text.isprintable():
        return None
    return text.encode()


def _scan(path: os.PathLike[str] | str, needle: bytes) -> list[bytes]:
    """The lines of one file that hold ``needle``: ``bytes.find`` over 1 MiB chunks read
    one after the other (a line across two chunks is joined; memory stays one chunk)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    except OSError as exc:  # a symlink (ELOOP), no permission: the whole read says so
        raise _Fallback from exc
    lines: list[bytes] = []
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            raise _Fallback
        carry = b""
        while True:
            try:
                chunk = os.read(fd, CHUNK)
            except OSError as exc:
                raise _Fallback from exc
            if not chunk:
                break
            first = chunk.find(b"\n")
            if first < 0:
                carry += chunk  # a line longer than a chunk
                continue
            head = carry + chunk[:first]  # the line begun in the chunk before
            if needle in head:
                lines.append(head)
            last = chunk.rfind(b"\n")
            pos = first + 1
            while True:
                i = chunk.find(needle, pos, last)
                if i < 0:
                    break
                start = chunk.rfind(b"\n", 0, i) + 1
                stop = chunk.find(b"\n", i, last + 1)
                lines.append(chunk[start:stop])
                pos = stop + 1
            carry = chunk[last + 1 :]
        # a last line without its newline is a writer in the middle of it: skipped, as
        # the whole read skips it
    finally:
        os.close(fd)
    return lines


# -- the index: which cgroups each journal file names ---------------------------------
#
# ``journal.idx`` (JSON, 0600, written atomically, a cache: anything wrong with it and it
# is rebuilt) holds, per journal file, its inode, how far it was read (``upto``, at a
# line's end), the 32 bytes before that (a file rewritten in place no longer has them)
# and the distinct cgroups its records name (``cgroup``, ``oom_group``, ``oom_memcg``:
# the fields the subtree filter looks at).  A file none of whose cgroups is in the
# subtree is not read at all; new lines appended since are read once, to update it.

INDEX = "journal.idx"
MAX_INDEXED = 4096  # distinct cgroups per file; past that the file is scanned instead
_FIELDS = (b'"cgroup":"', b'"oom_group":"', b'"oom_memcg":"')


def _cgroups_in(data: bytes) -> set[str] | None:
    """The distinct cgroup values in whole journal lines; None if one is escaped (the
    index then says nothing about this file)."""
    out: set[str] = set()
    for field in _FIELDS:
        pos = 0
        while True:
            i = data.find(field, pos)
            if i < 0:
                break
            start = i + len(field)
            stop = data.find(b'"', start)
            if stop < 0:
                return None
            value = data[start:stop]
            if b"\\" in value:
                return None
            out.add(value.decode("ascii", "replace"))
            pos = stop + 1
    return out


def _fingerprint(fd: int, upto: int) -> str:
    return os.pread(fd, 32, max(upto - 32, 0)).hex()


def _indexed(path: os.PathLike[str] | str, entries: list[object]) -> tuple[set[str] | None, object]:
    """(the cgroups the file names, or None if unknown; the file's index entry now).
    ``entries``: what the index had for it (a rotated file was the current one)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return set(), None
    except OSError:
        return None, None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE_BYTES:
            return None, None
        cgroups: set[str] = set()
        start = 0
        entry = next(
            (e for e in entries if isinstance(e, dict) and e.get("ino") == st.st_ino), None
        )
        if (
            isinstance(entry, dict)
            and entry.get("ino") == st.st_ino
            and isinstance(entry.get("upto"), int)
            and 0 <= entry["upto"] <= st.st_size
            and isinstance(entry.get("cgroups"), list)
            and all(isinstance(c, str) for c in entry["cgroups"])
            and entry.get("tail") == _fingerprint(fd, entry["upto"])
        ):
            start = entry["upto"]
            cgroups = set(entry["cgroups"])
        upto = start
        while upto < st.st_size:
            data = os.pread(fd, min(CHUNK, st.st_size - upto), upto)
            if not data:
                break
            end = data.rfind(b"\n") + 1
            if end == 0:
                if len(data) < CHUNK:
                    break  # a last line being written
                return None, None  # a line longer than a chunk: no index for this file
            found = _cgroups_in(data[:end])
            if found is None:
                return None, None
            cgroups |= found
            if len(cgroups) > MAX_INDEXED:
                return None, None
            upto += end
        new = {
            "ino": st.st_ino,
            "upto": upto,
            "tail": _fingerprint(fd, upto),
            "cgroups": sorted(cgroups),
        }
        return cgroups, new
    except OSError:
        return None, None
    finally:
        os.close(fd)


def _load_index(journal: Journal) -> dict[str, object]:
    from memcgctl.state.statedir import Corrupt, loads_bounded, read_bounded

    try:
        data = read_bounded(journal.state_dir / INDEX, 4 << 20)
        doc = loads_bounded(data) if data is not None else None
    except (OSError, Corrupt):
        return {}
    return doc if isinstance(doc, dict) else {}


def _save_index(journal: Journal, doc: dict[str, object]) -> None:
    import json

    from memcgctl.state.statedir import write_atomic

    with suppress(OSError):  # a cache: a read-only state directory scans every time
        write_atomic(journal.state_dir / INDEX, json.dumps(doc, sort_keys=True).encode())


def read_matching(journal: Journal, path: str) -> list[Event] | None:
    """The journal's records (oldest first, as :meth:`Journal.read`) whose line holds the
    cgroup ``path``: a superset of those about the subtree (``/a`` also finds ``/ab``),
    which the caller filters as before.  It holds every journal copy of a kernel kill the
    subtree shows too: the copy names the kill's cgroup (or the one the counters gave it).
    None: read the whole journal instead."""
    needle = _needle(path)
    if needle is None:
        return None
    if not check_state_dir(journal.state_dir):
        return []
    from memcgctl.vocab.cgpath import CgroupPath

    root = CgroupPath.parse(path)
    index = _load_index(journal)
    fresh: dict[str, object] = {}
    lines: list[bytes] = []
    try:
        files = (("older", journal.older), ("rotated", journal.rotated), ("current", journal.path))
        for name, file in files:
            cgroups, entry = _indexed(file, [index.get(name), index.get("current")])
            if entry is not None:
                fresh[name] = entry
            if (
                cgroups is not None
                and root is not None
                and not any(root.contains(c) for c in cgroups)
            ):
                continue  # nothing about the subtree in this file
            lines += _scan(file, needle)
    except _Fallback:
        return None
    if fresh != index:
        _save_index(journal, fresh)
    if not lines:
        return []
    good, _, bad = scan_lines(b"\n".join(lines) + b"\n", True)
    if bad:
        return None  # a line of the subtree that is no record: the whole read repairs it
    return good
