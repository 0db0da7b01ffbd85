"""Saved kernel logs: any common format, one line at a time, to (clock, message text).

Users meet OOM kills after the fact: in ``journalctl -k``, ``/var/log/kern.log``,
a ``dmesg`` from a support bundle, a paste in a ticket.  This module only *normalises*:
each input line becomes a :class:`LogLine` (the log's own timestamps where it has them,
and the kernel's message text); the OOM messages themselves are understood by
:mod:`memcgctl.logic.oomlines`, the one parser the live log uses too.

Formats, detected per line (so several may be mixed in one file):

* raw ``/dev/kmsg`` records ``PRIO,SEQ,USEC,FLAGS;TEXT`` (`` KEY=VALUE`` lines skipped);
* ``dmesg``: ``[ SECS.USEC] TEXT``; ``dmesg -T``: ``[Mon Nov 30 13:52:52 2026] TEXT``
  in any locale (the bracket is matched loosely: a time ``HH:MM:SS`` inside it);
  ``dmesg -x``: ``kern  :err   : `` before either;
* syslog / ``journalctl -k`` short and short-precise: ``Mon DD HH:MM:SS[.US] [HOST] kernel:``
  (the host is optional, the month name may be in any language);
  short-iso and RFC 3339 syslog: ``2026-11-30T13:52:52[.US]+00:00 HOST kernel:``;
  an optional ``<PRI>`` and a ``[SECS.USEC]`` stamp after ``kernel:`` are understood;
* ``journalctl -o json`` (one object per line; ``MESSAGE``, ``__REALTIME_TIMESTAMP``,
  ``_SOURCE_MONOTONIC_TIMESTAMP``);
* anything else: the line itself is the message (a paste of bare kernel lines).

Pure functions over text; no I/O.  Never raises for any input line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator

from memcgctl.logic.kmsgparse import unescape
from memcgctl.logic.oomlines import parse_oom_line
from memcgctl.vocab.structs import NamedTuple

TYPE_CHECKING = False
if TYPE_CHECKING:
    from datetime import datetime

# datetime (0.3 MiB resident) is imported where a saved log's dates are read, never by
# the daemon: the live kernel log is raw kmsg records (seconds since boot, no date)


class LogLine(NamedTuple):
    """One kernel message from a saved log.

    ``wall``: seconds since the epoch (UTC) if the line says when; ``uptime``: seconds
    since boot if it has a kernel timestamp; ``lineno``: 1-based line in the input;
    ``prefixed``: the line had a recognised log prefix (else it may be a wrapped
    piece of the line before)."""

    lineno: int
    wall: float | None
    uptime: float | None
    text: str
    prefixed: bool = True
    clock: str = ""  # the timestamp as the log wrote it


_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}

_QUOTE = re.compile(r"^(?:> ?)+")
_KMSG = re.compile(r"(\d+),(\d+),(\d+)(?:,[^;]*)?;")
_DMESG_X = re.compile(r"[a-z]+ *:[a-z]+ *: ")
_UPTIME = re.compile(r"\[ *(\d+)\.(\d+)\] ?(?:\[ *[TC]\d+\] ?)?")  # printk caller id: [ T42]
# dmesg -T / ctime in any locale: "[<day> <month> <dd> HH:MM:SS <yyyy>]"
_CTIME = re.compile(r"\[([^\]\[]{0,40}?\b(\d{1,2}):(\d\d):(\d\d)(?:[.,]\d+)?[^\]\[]{0,20})\] ?")
_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?"
    r"(Z|[+-]\d\d:?\d\d)? "
)
# syslog / journalctl short: "Nov 30 13:52:52[.123456] " (any locale: a word of letters)
_SYSLOG = re.compile(
    r"(?:<\d{1,3}>)?([^\W\d_]{2,12}\.?) +(\d{1,2}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))? "
)
# after the time: "[HOST ]kernel[: ]" (journalctl: "kernel:", rsyslog: "kernel:")
_KERNEL_TAG = re.compile(r"(?:(\S+) )?kernel: ?")


def _year_for(month: int, now: datetime) -> int:
    # syslog has no year: the most recent such month that is not in the future
    return now.year if month <= now.month else now.year - 1


def _local_epoch(
    y: int, mo: int, d: int, h: int, mi: int, s: int, frac: str | None
) -> float | None:
    from datetime import datetime

    try:
        dt = datetime(y, mo, d, h, mi, s)  # the log's local time: this machine's zone
        return dt.timestamp() + (float("0." + frac) if frac else 0.0)
    except (ValueError, OverflowError, OSError):
        return None


def _parse_iso(m: re.Match[str]) -> float | None:
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(1, 7))
    frac, tz = m.group(7), m.group(8)
    from datetime import datetime, timezone

    if tz is None:
        return _local_epoch(y, mo, d, h, mi, s, frac)
    try:
        if tz == "Z":
            offset = 0
        else:
            sign = -1 if tz[0] == "-" else 1
            digits = tz[1:].replace(":", "")
            offset = sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
        dt = datetime(y, mo, d, h, mi, s, tzinfo=timezone.utc)
        return dt.timestamp() - offset + (float("0." + frac) if frac else 0.0)
    except (ValueError, OverflowError):
        return None


def _now(now: datetime | None) -> datetime:
    from datetime import datetime

    return now or datetime.now()


def _ctime_epoch(inner: str, now: datetime) -> float | None:
    """``Mon Nov 30 13:52:52 2026`` in English; other locales: None (the message is
    still read, only its date is unknown)."""
    parts = inner.replace(",", " ").split()
    month = next((_MONTHS[p[:3].lower()] for p in parts if p[:3].lower() in _MONTHS), None)
    nums = [p for p in parts if p.isdigit()]
    clock = next((p for p in parts if p.count(":") == 2), None)
    if month is None or clock is None or len(nums) < 2:
        return None
    year = next((int(n) for n in nums if len(n) == 4), None)
    day = next((int(n) for n in nums if len(n) <= 2), None)
    if year is None or day is None:
        return None
    try:
        h, mi, s = (int(float(x)) for x in clock.split(":"))
    except ValueError:
        return None
    return _local_epoch(year, month, day, h, mi, s, None)


def _json_line(line: str, lineno: int) -> LogLine | None:
    import json

    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    msg = doc.get("MESSAGE")
    if isinstance(msg, list):  # journald stores non-UTF-8 messages as a byte array
        try:
            msg = bytes(int(b) & 0xFF for b in msg).decode("utf-8", "replace")
        except (TypeError, ValueError):
            return None
    if not isinstance(msg, str):
        return None
    wall = uptime = None
    try:
        if "__REALTIME_TIMESTAMP" in doc:
            wall = int(doc["__REALTIME_TIMESTAMP"]) / 1e6
        mono = doc.get("_SOURCE_MONOTONIC_TIMESTAMP")
        if mono is not None:
            uptime = int(mono) / 1e6
    except (TypeError, ValueError):
        pass
    text = msg.rstrip("\n")
    m = _UPTIME.match(text)
    if m:
        text = text[m.end() :]
    return LogLine(lineno, wall, uptime, text, True, str(doc.get("__REALTIME_TIMESTAMP", "")))


def normalise(line: str, lineno: int = 0, now: datetime | None = None) -> LogLine:
    """One input line as a :class:`LogLine`."""
    line = line.rstrip("\r\n")
    if line[:1] == ">":  # quoted in a mail or a ticket
        line = _QUOTE.sub("", line, count=1)
    if line[:1] == "{":
        js = _json_line(line, lineno)
        if js is not None:
            return js
    m = _KMSG.match(line)
    if m:
        usec = int(m.group(3))
        text = unescape(line[m.end() :].rstrip())  # the kernel's \xNN escapes, as live
        return LogLine(lineno, None, usec / 1e6, text, True, m.group(3))
    rest = line
    wall: float | None = None
    uptime: float | None = None
    clock = ""
    prefixed = False
    m = _DMESG_X.match(rest)
    if m:
        rest = rest[m.end() :]
        prefixed = True
    if rest[:1] == "[":
        m = _UPTIME.match(rest)
        if m:
            uptime = int(m.group(1)) + float("0." + m.group(2))
            clock = rest[: m.end()].strip()
            return LogLine(lineno, None, uptime, rest[m.end() :].rstrip(), True, clock)
        m = _CTIME.match(rest)
        if m:
            clock = m.group(1)
            wall = _ctime_epoch(m.group(1), _now(now))
            return LogLine(lineno, wall, None, rest[m.end() :].rstrip(), True, clock)
        return LogLine(lineno, None, None, rest.strip(), prefixed)
    m = _ISO.match(rest) if rest[:1].isdigit() else None
    if m:
        wall = _parse_iso(m)
        clock = m.group(0).strip()
        rest = rest[m.end() :]
        prefixed = True
    else:
        m = _SYSLOG.match(rest)
        if m:
            clock = m.group(0).strip()
            month = _MONTHS.get(m.group(1)[:3].lower())
            if month is not None:
                ref = _now(now)
                wall = _local_epoch(
                    _year_for(month, ref),
                    month,
                    int(m.group(2)),
                    int(m.group(3)),
                    int(m.group(4)),
                    int(m.group(5)),
                    m.group(6),
                )
            rest = rest[m.end() :]
            prefixed = True
    if prefixed and clock:
        k = _KERNEL_TAG.match(rest)
        if k is None:
            # a syslog line of some other program: not a kernel message
            return LogLine(lineno, wall, None, "", True, clock)
        rest = rest[k.end() :]
        m = _UPTIME.match(rest)
        if m:
            uptime = int(m.group(1)) + float("0." + m.group(2))
            rest = rest[m.end() :]
    if not prefixed:
        rest = rest.strip()  # a paste: indented, or the second half of a wrapped line
    return LogLine(lineno, wall, uptime, rest.rstrip(), prefixed, clock)


# Lines worth normalising: a keyword of an OOM report line (the parser's), a task-table
# row or header, the report's memory lines, the stack dump header (kernel version).
# One C-level scan per raw line keeps a 100 MB log of unrelated lines fast (under 5 s:
# bench/postmortem_bench.py).
_INTERESTING = re.compile(
    rb"oom|Kill|Task|: usage |Memory cgroup|Out of memory|already exiting|pages RAM|"
    rb"Total swap|pages reserved|\[ *pid *\]|\[ *\d+\] +\d+ +\d+ +\d+|CPU: \d+ |Pid: \d+, comm: |"
    rb"killed as a result"
).search


# a kill line wrapped right after "Killed" / "Kill" (the rest, "process N (comm) …", follows)
_KILL_CUT = re.compile(r"(?:^|: )Kill(?:ed)?(?: process(?: \d+)?)?$").search
_TABLE_START = re.compile(r"\[ *(?:pid|\d+) *\]").match
_MAX_JOINS = 3  # a wrapped paste rarely splits one kernel line in more pieces


def _broken(text: str, row_tokens: int) -> bool:
    """A line the parser does not (fully) understand that the next line may continue:
    an OOM line cut by wrapping, or a task-table header or row with too few columns."""
    line = parse_oom_line(text)
    if line is None:
        return _KILL_CUT(text) is not None or (
            text.startswith(("Task in ", "oom-kill:"))
            or _TABLE_START(text) is not None
            or "Killed process " in text
            or "Kill process " in text
            or "invoked oom-killer" in text
            or ": usage " in text
        )
    what, f = line.what, line.fields
    if what == "killed":
        # cut short, or wrapped after a comma (the UID and oom_score_adj follow)
        return bool(f.get("partial")) or text.endswith(",")
    if what == "task_in":
        return not f["oom_memcg"]
    if what == "tasks_header":
        return not f["columns"] or f["columns"][-1] != "name"
    if what == "task_row":
        return row_tokens > 0 and len(f["rest"].split()) < row_tokens
    return False


def _join(cur: LogLine, nxt: LogLine) -> LogLine | None:
    """``cur`` continued by ``nxt`` (a wrapped paste, or an old kernel's ``Task in X`` /
    `` killed as a result of…`` / ``Y`` pieces), or None if ``nxt`` starts a line."""
    text = nxt.text.strip()
    if not text:
        return None
    if parse_oom_line(text) is not None:
        return None  # a line of its own
    if nxt.prefixed and not (
        cur.text.startswith("Task in ")
        and ("killed as a result of limit of" in text or text.startswith("/"))
    ):
        return None
    sep = "" if cur.text.endswith(" ") else " "
    return cur._replace(text=cur.text + sep + text)


# The longest input line kept: a kernel record is at most 8 KiB (CONSOLE_EXT_LOG_MAX), a
# journalctl -o json line of one a few KiB more.  Longer lines are cut here, so memory
# stays bounded for any input (a sparse file of gigabytes without a newline).
MAX_LINE = 64 << 10


def read_lines(
    chunks: Iterable[bytes],
    now: datetime | None = None,
    on_cut: Callable[[int], None] | None = None,
) -> Iterator[LogLine]:
    """The kernel messages of a saved log that may matter to an OOM report, streamed
    from byte chunks (any split).  Unrelated lines are skipped without decoding.  A
    line longer than :data:`MAX_LINE` bytes is cut to its first ``MAX_LINE`` bytes
    (the rest is skipped unread into memory) and ``on_cut(lineno)`` is called."""
    interesting = _INTERESTING
    lineno = 0
    tail = b""
    skipping = False  # inside a line that was cut: drop bytes up to its newline
    pending: LogLine | None = None  # a broken OOM line that the next lines may continue
    joins = 0
    row_tokens = 0  # tokens after "[ pid ]" in a row of the current table

    def settle(ll: LogLine) -> LogLine:
        nonlocal row_tokens
        if ll.text[:1] == "[":
            line = parse_oom_line(ll.text)
            if line is not None and line.what == "tasks_header":
                row_tokens = len(line.fields["columns"]) + 2
        return ll

    for chunk in _with_tail(chunks):
        if chunk is None:  # the end: a last line without a newline
            lines = [tail] if tail else []
            tail = b""
        else:
            if skipping:
                end = chunk.find(b"\n")
                if end < 0:
                    continue
                chunk, skipping = chunk[end + 1 :], False
            data = tail + chunk
            lines = data.split(b"\n")
            tail = lines.pop()
            if len(tail) > MAX_LINE:  # no newline in sight: cut it now
                lines.append(tail)
                tail, skipping = b"", True
        for raw in lines:
            lineno += 1
            if len(raw) > MAX_LINE:
                raw = raw[:MAX_LINE]
                if on_cut is not None:
                    on_cut(lineno)
            if pending is not None:
                nxt = normalise(raw.decode("utf-8", "replace"), lineno, now)
                joined = _join(pending, nxt)
                if joined is not None:
                    joins += 1
                    if joins < _MAX_JOINS and _broken(joined.text, row_tokens):
                        pending = joined
                        continue
                    pending = None
                    yield settle(joined)
                    continue
                yield settle(pending)  # as it is: the parser takes what it can
                pending = None
                if interesting(raw) is None:
                    continue
                ll = nxt
            elif interesting(raw) is None:
                continue
            else:
                ll = normalise(raw.decode("utf-8", "replace"), lineno, now)
            if _broken(ll.text, row_tokens):
                pending, joins = ll, 0
                continue
            yield settle(ll)
    if pending is not None:
        yield settle(pending)


def _with_tail(chunks: Iterable[bytes]) -> Iterator[bytes | None]:
    for chunk in chunks:
        if chunk:
            yield chunk
    yield None
