"""The journal's lines: parsing them into records, and following new ones.

The journal is JSON lines, one record each.  :func:`scan_lines` turns a file's bytes
into the good records and counts the bad lines (too long, not JSON, not a record of
ours); a last line without its newline is a writer in the middle of it.
:class:`JournalTail` hands ``events --follow`` the whole lines appended since it last
looked, following a rotation to ``journal.jsonl.1``.  The size bounds here are the
ones every reader of the journal applies.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from memcgctl.state.statedir import Corrupt, loads_bounded, open_bounded

TYPE_CHECKING = False
if TYPE_CHECKING:
    from memcgctl.state.journal import Journal
    from memcgctl.vocab.records import Event

# A journal is rotated at max_bytes; a file far larger than that is not one of ours.
MAX_FILE_BYTES = 64 << 20
MAX_LINE_BYTES = 64 << 10


def scan_lines(data: bytes, torn_ok: bool) -> tuple[list[Event], list[bytes], int]:
    """(good records, their lines, number of bad lines).  With ``torn_ok`` a last line
    without its newline is skipped silently (a writer may be in the middle of it)."""
    # the record types only when the journal is parsed: ``counters`` usually is not
    from memcgctl.vocab.records import parse_record

    good: list[Event] = []
    lines: list[bytes] = []
    bad = 0
    parts = data.split(b"\n")
    tail = parts.pop()  # after the last newline: b"" or an unterminated line
    if tail.strip() and not torn_ok:
        parts.append(tail)
    for line in parts:
        if not line.strip():
            continue
        if len(line) > MAX_LINE_BYTES:
            bad += 1
            continue
        try:
            rec = loads_bounded(line)
        except Corrupt:
            bad += 1
            continue
        record = parse_record(rec)
        if record is not None:
            good.append(record)
            lines.append(line)
        else:
            bad += 1
    return good, lines, bad


def iter_file(path: Path, chunk: int = 1 << 20) -> Iterator[Event | None]:
    """The records of one journal file as :func:`scan_lines` finds them (``torn_ok``),
    one at a time, None for each bad line, reading ``chunk`` bytes at a time: memory
    is one chunk and one record, not the file.  Nothing for a missing file or one that
    cannot be read; :class:`Corrupt` for one that is no journal file (as
    :func:`~memcgctl.state.statedir.read_bounded`: a symlink, not regular, too big)."""
    from memcgctl.vocab.records import parse_record

    try:
        fd = open_bounded(path, MAX_FILE_BYTES)  # Corrupt (no OSError) propagates
    except OSError:
        return  # cannot be read: nothing
    if fd is None:
        return
    try:
        carry = b""
        total = 0
        while True:
            try:
                data = os.read(fd, chunk)
            except OSError:
                return
            if not data:
                return  # what is left in carry has no newline: torn, skipped
            total += len(data)
            if total > MAX_FILE_BYTES:
                raise Corrupt(f"larger than {MAX_FILE_BYTES} bytes")
            lines = (carry + data).split(b"\n")
            carry = lines.pop()
            for line in lines:
                if not line.strip():
                    continue
                if len(line) > MAX_LINE_BYTES:
                    yield None
                    continue
                try:
                    yield parse_record(loads_bounded(line))
                except Corrupt:
                    yield None
            if len(carry) > MAX_LINE_BYTES + 1:
                carry = carry[: MAX_LINE_BYTES + 1]  # too long already: bad, not kept whole
    finally:
        os.close(fd)


class JournalTail:
    """New records appended to the journal since the last call (``events --follow``):
    whole lines only (a line being written waits for its newline), from the end of the
    file as it was when the tail was made.  Follows a rotation: what was appended to
    the old file before it was renamed is read from ``journal.jsonl.1`` first."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.ino, self.offset = self._stat(journal.path)
        self.partial = b""

    @staticmethod
    def _stat(path: Path) -> tuple[int | None, int]:
        try:
            st = os.lstat(path)
        except OSError:
            return None, 0
        return st.st_ino, st.st_size

    def _read_from(self, path: Path, offset: int) -> tuple[bytes, int]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return b"", offset
        try:
            data = os.pread(fd, MAX_FILE_BYTES, offset)
        finally:
            os.close(fd)
        return data, offset + len(data)

    def read_new(self) -> list[Event]:
        ino, size = self._stat(self.journal.path)
        data = b""
        if ino != self.ino:
            old_ino, _ = self._stat(self.journal.rotated)
            if self.ino is not None and old_ino == self.ino:
                data, _ = self._read_from(self.journal.rotated, self.offset)
            self.ino, self.offset, self.partial = ino, 0, b""
            if data and not data.endswith(b"\n"):
                data += b"\n"  # the old file's torn tail ends here
        elif size < self.offset:  # rewritten (repaired) in place: start over at its end
            self.offset, self.partial = size, b""
            return []
        if ino is not None:
            more, self.offset = self._read_from(self.journal.path, self.offset)
            data += more
        data = self.partial + data
        cut = data.rfind(b"\n") + 1
        self.partial = data[cut:]
        good, _, _ = scan_lines(data[:cut], torn_ok=True)
        return good
