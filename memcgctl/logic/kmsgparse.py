"""/dev/kmsg records: the ``PRIO,SEQ,USEC,FLAGS;TEXT`` records, their pre-filter and the
``pr_cont`` fragments of old kernels joined (pure functions, no I/O).

A record is parsed into a :class:`KmsgRecord` (level, facility, sequence number, µs since
boot, flags, text with the kernel's ``\\xNN`` escapes undone, and the `` KEY=VALUE``
properties).  :func:`parse_records` skips, with one C-level scan per record, the records
that cannot be part of an OOM report; :func:`usec_to_iso` turns a record's timestamp
into ISO 8601 UTC.
"""

from __future__ import annotations

import re

from memcgctl.vocab.records import EPOCH_ISO, utc_iso
from memcgctl.vocab.structs import NamedTuple


class KmsgRecord(NamedTuple):
    """One /dev/kmsg record: ``PRIO,SEQ,USEC,FLAGS[,…];TEXT`` + `` KEY=VALUE`` lines."""

    level: int
    facility: int
    seq: int
    usec: int
    flags: str
    text: str
    props: tuple[tuple[str, str], ...] = ()


_HEX_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that no byte made
        return text.encode("utf-8", "replace")


def unescape(text: str) -> str:
    """A record's text with the kernel's ``\\xNN`` escapes undone.

    The kernel escapes every byte below 0x20, from 0x7f up, and the backslash itself
    (``msg_add_ext_text``: a tab in ``"\\x09Tasks RCU …"``, a memcg named ``café`` as
    ``caf\\xc3\\xa9``).  The escapes are bytes: put back together they are UTF-8, so
    ``café`` stays ``café`` (not ``cafÃ©``), and a byte that is not UTF-8 becomes the
    surrogate ``os.fsdecode`` gives the cgroup's directory name, so the path matches."""
    if "\\x" not in text:
        return text
    parts = _HEX_ESCAPE.split(text)  # literal, hex, literal, hex, …, literal
    data = bytearray()
    for i, part in enumerate(parts):
        if i % 2:
            data.append(int(part, 16))
        else:
            data += _utf8(part)
    return data.decode("utf-8", "surrogateescape")


def parse_record(raw: bytes | str) -> KmsgRecord | None:
    """Parse one record as read() returns it; None if it is not a kmsg record."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    header, sep, rest = text.partition(";")
    if not sep:
        return None
    fields = header.split(",")
    if len(fields) < 3:
        return None
    try:
        prio, seq, usec = int(fields[0]), int(fields[1]), int(fields[2])
    except ValueError:
        return None
    if prio < 0 or seq < 0 or usec < 0:
        return None
    flags = fields[3] if len(fields) > 3 else "-"
    lines = rest.split("\n")
    message = lines[0]
    props: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line.startswith(" "):
            key, eq, value = line[1:].partition("=")
            if eq:
                props.append((key, unescape(value)))
    return KmsgRecord(
        level=prio & 7,
        facility=prio >> 3,
        seq=seq,
        usec=usec,
        flags=flags,
        text=unescape(message),
        props=tuple(props),
    )


# a literal that every line parse_oom_line understands contains
_KEYWORDS = (
    b"oom",  # invoked oom-killer, oom-kill:, oom_reaper, memory.oom.group
    b"Kill",  # Killed process, Kill process (4.19)
    b"Task in ",  # 4.19 memcg report
    b": usage ",  # memory: / memory+swap: / swap: / kmem: usage
    b"Memory cgroup",
    b"Out of memory",
    b"already exiting",
)
# one C-level scan per record instead of seven substring searches
_KEYWORD_SCAN = re.compile(b"|".join(re.escape(k) for k in _KEYWORDS)).search


# a header whose flags are "-" (a whole record, not a pr_cont fragment of an old kernel)
_PLAIN_HEAD = re.compile(rb"[^;]{0,44},-[;,]").match


def record_seq(raw: bytes) -> int:
    """The sequence number of a raw /dev/kmsg record (``PRIO,SEQ,…``); -1 if garbled."""
    try:
        return int(raw.split(b",", 2)[1])
    except (IndexError, ValueError):
        return -1


def parse_records(raws: list[bytes]) -> list[KmsgRecord]:
    """The records of ``raws`` that may belong to an OOM report, parsed: a record is
    skipped only when it has no OOM keyword and is not a ``pr_cont`` fragment of an old
    kernel (most of the ring is boot noise).  The filter is inlined (two C-level scans
    per record, no Python call): a full ring holds thousands of records and
    ``counters`` reads them all."""
    scan, plain = _KEYWORD_SCAN, _PLAIN_HEAD
    out = []
    for raw in raws:
        if scan(raw) is not None or plain(raw) is None:
            rec = parse_record(raw)
            if rec is not None:
                out.append(rec)
    return out


def usec_to_iso(usec: int, boot_time: float) -> str:
    """A kmsg timestamp (µs since boot) as ISO 8601 UTC, given the boot time (epoch s)."""
    return utc_iso(boot_time + usec / 1e6) or EPOCH_ISO


def join_continuations(records: list[KmsgRecord]) -> list[KmsgRecord]:
    """Old kernels split ``pr_cont`` output into fragments: a record flagged ``c``
    starts a line that records flagged ``+`` continue.  Join them into one record."""
    out: list[KmsgRecord] = []
    for rec in records:
        if rec.flags == "+" and out and out[-1].flags in ("c", "+"):
            prev = out[-1]
            out[-1] = KmsgRecord(
                prev.level,
                prev.facility,
                prev.seq,
                prev.usec,
                "+",
                prev.text + rec.text,
                prev.props,
            )
        else:
            out.append(rec)
    return out
