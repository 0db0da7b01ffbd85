"""The kernel log: /dev/kmsg records and the OOM killer's lines (pure functions, no I/O).

Formats (mm/oom_kill.c, mm/memcontrol.c), 4.19 to 6.x:

* ``COMM invoked oom-killer: gfp_mask=0x…(…), [nodemask=…, ]order=N, oom_score_adj=N``
* 4.19 memcg report: ``Task in PATH killed as a result of limit of PATH``;
  ``memory: usage NkB, limit NkB, failcnt N``; ``Memory cgroup stats for PATH:``
* 5.0+ summary: ``oom-kill:constraint=C,nodemask=…[,cpuset=…,mems_allowed=…],
  {oom_memcg=PATH|global_oom}[,task_memcg=PATH],task=COMM,pid=N,uid=N``
* ``MSG: Killed process PID (COMM) total-vm:NkB, anon-rss:NkB, file-rss:NkB,
  shmem-rss:NkB[, UID:N pgtables:NkB oom_score_adj:N]``; 4.19: ``MSG: Kill process PID
  (COMM) score S or sacrifice child`` then an unprefixed ``Killed process …``
* ``Tasks in PATH are going to be killed due to memory.oom.group set``
* ``oom_reaper: reaped process PID (COMM), now anon-rss:…`` / ``oom_reaper: unable to
  reap pid:PID (COMM)``
* ``MSG: OOM victim PID (COMM) is already exiting. Skip killing the task``
* ``Out of memory and no killable processes...``
* the report's context, for ``explain-kill``: ``Tasks state (memory values in pages):``, the
  ``[ pid ]`` header and its rows (any column layout since 3.x), ``N pages RAM``,
  ``N pages reserved``, ``Total swap = NkB``, and the stack dump's ``CPU: N PID: N Comm: C
  … RELEASE`` line; 3.x-4.x vendor kill lines ``Killed process N (C), UID U,`` and
  ``Killed process N, UID U, (C)``; a kill line cut short yields pid and comm (``partial``)

COMM is the task's comm: up to 15 bytes, any bytes but NUL, so it may hold spaces, commas
and parentheses.  Where a fixed suffix follows it (`` total-vm:``, ``) score ``), the
comm is everything up to that suffix, not up to the first ``)``.

:class:`OomAssembler` turns the lines of one OOM (summary + kill line) into one
``oom_kill`` event (time, kind, cgroup, source, pid, comm, oom_memcg, constraint, the rss
sizes, oom_score_adj, uid, as far as the log tells).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from memcgctl.vocab.records import EPOCH_ISO, KernelEvent, add_fields, kernel_event, utc_iso

# -- /dev/kmsg records ---------------------------------------------------------------


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


def _unescape(text: str) -> str:
    # the kernel escapes non-printable bytes as \xNN (a tab in "\x09Tasks RCU …")
    if "\\x" not in text:
        return text
    return _HEX_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


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
                props.append((key, _unescape(value)))
    return KmsgRecord(
        level=prio & 7,
        facility=prio >> 3,
        seq=seq,
        usec=usec,
        flags=flags,
        text=_unescape(message),
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


def may_matter(raw: bytes) -> bool:
    """A cheap pre-filter: False only for records that cannot be part of an OOM report
    (no keyword, and not a pr_cont fragment of an old kernel).  Most of the ring is
    boot noise; skipping it keeps ``counters`` fast."""
    return _KEYWORD_SCAN(raw) is not None or _PLAIN_HEAD(raw) is None


def record_seq(raw: bytes) -> int:
    """The sequence number of a raw /dev/kmsg record (``PRIO,SEQ,…``); -1 if garbled."""
    try:
        return int(raw.split(b",", 2)[1])
    except (IndexError, ValueError):
        return -1


def parse_records(raws: list[bytes]) -> list[KmsgRecord]:
    """The records of ``raws`` that may belong to an OOM report, parsed.  The filter
    is inlined (two C-level scans per record, no Python call): a full ring holds
    thousands of records and ``counters`` reads them all."""
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


# -- OOM lines -----------------------------------------------------------------------


class _Pattern:
    """A regular expression compiled on first use: most kernel logs hold no OOM report,
    and ``counters`` is a one-shot command that must start fast."""

    __slots__ = ("_rx", "_src")

    def __init__(self, src: str) -> None:
        self._src = src
        self._rx: re.Pattern[str] | None = None

    def match(self, text: str) -> re.Match[str] | None:
        rx = self._rx
        if rx is None:
            rx = self._rx = re.compile(self._src)
        return rx.match(text)


_MSG = r"(?:(?P<msg>[^:]*?(?:out of memory|Out of memory)[^:]*): )?"

_RE_INVOKED = _Pattern(
    r"^(?P<comm>.*) invoked oom-killer: gfp_mask=(?P<gfp>0x[0-9a-fA-F]+)(?:\((?P<gfp_flags>[^)]*)\))?"
    r"(?:, nodemask=(?P<nodemask>.*?))?, order=(?P<order>-?\d+)"
    r"(?:, oom_score_adj=(?P<adj>-?\d+))?"
)
_RE_TASK_IN = _Pattern(
    r"^Task in (?P<task_memcg>.*) killed as a result of limit of (?P<oom_memcg>.*)$"
)
_RE_MEMCG_USAGE = _Pattern(
    r"^(?P<counter>memory|memory\+swap|swap|kmem): usage (?P<usage>\d+)kB, limit (?P<limit>\d+)kB, failcnt (?P<failcnt>\d+)"
)
_RE_MEMCG_STATS = _Pattern(r"^Memory cgroup stats for (?P<path>.*):$")
_RE_SUMMARY = _Pattern(
    r"^oom-kill:constraint=(?P<constraint>[A-Za-z_]*),nodemask=(?P<nodemask>\(null\)|[0-9,\-]*?)"
    r"(?:,cpuset=(?P<cpuset>.*?),mems_allowed=(?P<mems>[0-9,\-]*?))?"
    r",(?:oom_memcg=(?P<oom_memcg>.*?)|(?P<global>global_oom))"
    r"(?:,task_memcg=(?P<task_memcg>.*?))?"
    r",task=(?P<comm>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+)$"
)
_RE_KILLED = _Pattern(
    r"^" + _MSG + r"Killed process (?P<pid>\d+)(?:, UID (?P<uid0>\d+),)? \((?P<comm>.*)\)"
    r"(?:,? UID (?P<uid1>\d+),)? (?:total-vm|vsz):(?P<total_vm>\d+)kB, "
    r"anon-rss:(?P<anon>\d+)kB, file-rss:(?P<file>\d+)kB(?:, shmem-rss:(?P<shmem>\d+)kB)?"
    r"(?:,? UID:(?P<uid>\d+))?(?: pgtables:(?P<pgtables>\d+)kB)?(?: oom_score_adj:(?P<adj>-?\d+))?"
)
# a kill line cut short (a truncated paste, a full ring): what it still says
_RE_KILLED_PARTIAL = _Pattern(
    r"^"
    + _MSG
    + r"Killed process (?P<pid>\d+)(?:, UID (?P<uid0>\d+),)? \((?P<comm>.*?)\)(?P<tail>.*)$"
)
_KILLED_TAILS = (" total-vm:", ", UID ", " vsz:")


def _truncated_tail(tail: str) -> bool:
    """What follows ``(COMM)`` on a kill line cut short: nothing, or the start of the
    sizes (never other text: that is some other message)."""
    return not tail or any(tail.startswith(t) or t.startswith(tail) for t in _KILLED_TAILS)


_RE_TASKS_HEADER = _Pattern(r"^\[ *pid *\] +uid +tgid +(?P<cols>.*)$")
_RE_TASK_ROW = _Pattern(r"^\[ *(?P<pid>\d+)\] +(?P<rest>-?\d+ .*)$")
_RE_CPU = _Pattern(
    r"^CPU: \d+ (?:UID: \d+ )?PID: (?P<pid>\d+) Comm: (?P<comm>.*?) "
    r"(?:Not tainted|Tainted: [^0-9]*?) *(?P<release>\d+\.\d+[\w.+~-]*)"
)
_RE_KILL_419 = _Pattern(
    r"^"
    + _MSG
    + r"Kill process (?P<pid>\d+) \((?P<comm>.*)\) score (?P<score>\d+) or sacrifice child$"
)
_RE_GROUP = _Pattern(
    r"^Tasks in (?P<path>.*) are going to be killed due to memory\.oom\.group set$"
)
_RE_REAPED = _Pattern(
    r"^oom_reaper: reaped process (?P<pid>\d+) \((?P<comm>.*)\), now anon-rss:(?P<anon>\d+)kB, "
    r"file-rss:(?P<file>\d+)kB, shmem-rss:(?P<shmem>\d+)kB"
)
_RE_UNABLE = _Pattern(r"^oom_reaper: unable to reap pid:(?P<pid>\d+) \((?P<comm>.*)\)$")
_RE_EXITING = _Pattern(
    r"^"
    + _MSG
    + r"OOM victim (?P<pid>\d+) \((?P<comm>.*)\) is already exiting\. Skip killing the task$"
)

_MEMCG_MESSAGES = ("Memory cgroup out of memory",)


class OomLine(NamedTuple):
    """One understood line: ``what`` names the format, ``fields`` its values."""

    what: str
    fields: dict[str, Any]


def _ints(m: re.Match[str], *names: str) -> dict[str, int]:
    out = {}
    for name in names:
        value = m.group(name)
        if value is not None:
            out[name] = int(value)
    return out


def parse_oom_line(text: str) -> OomLine | None:
    """Recognise one OOM-related kernel log line; None for anything else.  Never raises
    for any input."""
    if not text:
        return None
    head = text[:40]
    if "invoked oom-killer" in text:
        m = _RE_INVOKED.match(text)
        if m:
            return OomLine(
                "invoked",
                {
                    "comm": m.group("comm"),
                    "gfp_mask": m.group("gfp"),
                    **_ints(m, "order", "adj"),
                },
            )
        return None
    if head.startswith("oom-kill:"):
        m = _RE_SUMMARY.match(text)
        if not m:
            return None
        return OomLine(
            "summary",
            {
                "constraint": m.group("constraint"),
                "oom_memcg": m.group("oom_memcg") if not m.group("global") else None,
                "global_oom": m.group("global") is not None,
                "task_memcg": m.group("task_memcg"),
                "cpuset": m.group("cpuset"),
                "comm": m.group("comm"),
                "pid": int(m.group("pid")),
                "uid": int(m.group("uid")),
            },
        )
    if "Killed process " in text:
        m = _RE_KILLED.match(text)
        if not m:
            m = _RE_KILLED_PARTIAL.match(text)
            if not m or not _truncated_tail(m.group("tail")):
                return None
            uid0 = m.group("uid0")
            part: dict[str, Any] = {
                "message": m.group("msg"),
                "pid": int(m.group("pid")),
                "comm": m.group("comm"),
                "partial": True,
            }
            if uid0 is not None:
                part["uid"] = int(uid0)
            return OomLine("killed", part)
        f: dict[str, Any] = {
            "message": m.group("msg"),
            "pid": int(m.group("pid")),
            "comm": m.group("comm"),
            "total_vm_kb": int(m.group("total_vm")),
            "anon_rss_kb": int(m.group("anon")),
            "file_rss_kb": int(m.group("file")),
            "shmem_rss_kb": int(m.group("shmem")) if m.group("shmem") is not None else None,
        }
        for key, name in (
            ("uid", "uid0"),
            ("uid", "uid1"),
            ("uid", "uid"),
            ("pgtables_kb", "pgtables"),
            ("oom_score_adj", "adj"),
        ):
            if m.group(name) is not None:
                f[key] = int(m.group(name))
        return OomLine("killed", f)
    if "Kill process " in text:
        m = _RE_KILL_419.match(text)
        if m:
            return OomLine(
                "kill_select",
                {
                    "message": m.group("msg"),
                    "pid": int(m.group("pid")),
                    "comm": m.group("comm"),
                    "score": int(m.group("score")),
                },
            )
        return None
    if head.startswith("Tasks in "):
        m = _RE_GROUP.match(text)
        return OomLine("oom_group", {"cgroup": m.group("path")}) if m else None
    if head.startswith("oom_reaper: "):
        m = _RE_REAPED.match(text)
        if m:
            return OomLine(
                "reaped",
                {
                    "pid": int(m.group("pid")),
                    "comm": m.group("comm"),
                    "anon_rss_kb": int(m.group("anon")),
                    "file_rss_kb": int(m.group("file")),
                    "shmem_rss_kb": int(m.group("shmem")),
                },
            )
        m = _RE_UNABLE.match(text)
        if m:
            return OomLine("reap_failed", {"pid": int(m.group("pid")), "comm": m.group("comm")})
        return None
    if "is already exiting" in text:
        m = _RE_EXITING.match(text)
        if m:
            return OomLine(
                "already_exiting",
                {"message": m.group("msg"), "pid": int(m.group("pid")), "comm": m.group("comm")},
            )
        return None
    if text.startswith("Out of memory and no killable processes"):
        return OomLine("no_killable", {})
    if text[:1] == "[":
        m = _RE_TASK_ROW.match(text)
        if m:
            return OomLine("task_row", {"pid": int(m.group("pid")), "rest": m.group("rest")})
        m = _RE_TASKS_HEADER.match(text)
        if m:
            return OomLine("tasks_header", {"columns": m.group("cols").split()})
        return None
    if text.endswith(" pages RAM"):
        n = text[: -len(" pages RAM")].strip()
        return OomLine("ram_pages", {"pages": int(n)}) if n.isdigit() else None
    if text.endswith(" pages reserved"):
        n = text[: -len(" pages reserved")].strip()
        return OomLine("reserved_pages", {"pages": int(n)}) if n.isdigit() else None
    if text.startswith("Total swap = ") and text.endswith("kB"):
        n = text[len("Total swap = ") : -2].strip()
        return OomLine("swap_total", {"kb": int(n)}) if n.isdigit() else None
    if head.startswith("CPU: "):
        m = _RE_CPU.match(text)
        if m:
            return OomLine(
                "cpu",
                {
                    "pid": int(m.group("pid")),
                    "comm": m.group("comm"),
                    "release": m.group("release"),
                },
            )
        return None
    if head.startswith("Tasks state"):
        return OomLine("tasks_state", {})
    if head.startswith("Task in "):
        m = _RE_TASK_IN.match(text)
        if m:
            return OomLine(
                "task_in", {"task_memcg": m.group("task_memcg"), "oom_memcg": m.group("oom_memcg")}
            )
        return None
    if head.startswith(("memory", "swap:", "kmem:")):
        m = _RE_MEMCG_USAGE.match(text)
        if m:
            return OomLine(
                "memcg_usage",
                {"counter": m.group("counter"), **_ints(m, "usage", "limit", "failcnt")},
            )
        return None
    if head.startswith("Memory cgroup stats for "):
        m = _RE_MEMCG_STATS.match(text)
        return OomLine("memcg_stats", {"cgroup": m.group("path")}) if m else None
    return None


# -- assembling events -----------------------------------------------------------------

CONSTRAINT_MEMCG = "CONSTRAINT_MEMCG"


def cause_of(event: Mapping[str, Any]) -> str | None:
    """``memcg`` (a cgroup limit) or ``system`` (host-wide, cpuset, mempolicy) for a
    kernel kill event; None when unknown."""
    constraint = event.get("constraint")
    if constraint == CONSTRAINT_MEMCG:
        return "memcg"
    if event.get("oom_memcg") not in (None, "/"):
        # 5.0-5.2 printed CONSTRAINT_NONE even for a memcg OOM; oom_memcg= tells
        return "memcg"
    if constraint:
        return "system"
    message = event.get("message")
    if message is None:
        return None
    return "memcg" if message in _MEMCG_MESSAGES else "system"


class OomAssembler:
    """Feed records in sequence order; get events (dicts with the event keys).

    State is only what one OOM report needs: the last summary (5.0+) or ``Task in``
    line (4.19), the last ``Kill process`` line (4.19), and the memory.oom.group the
    current OOM is killing.  A ``Killed process`` line without a summary (the report
    is rate-limited, the kill line is not) still yields an event with what it says.
    """

    def __init__(self, boot_time: float, boot_id: str = "unknown") -> None:
        self.boot_time = boot_time
        self.boot_id = boot_id
        self._summary: dict[str, Any] | None = None
        self._task_in: dict[str, Any] | None = None
        self._select: dict[str, Any] | None = None
        self._group: str | None = None
        self._group_ctx: dict[str, Any] | None = None

    def feed(self, rec: KmsgRecord) -> list[KernelEvent]:
        try:
            line = parse_oom_line(rec.text)
        except Exception:  # a parser bug must never stop the stream
            return []
        if line is None:
            return []
        f = line.fields
        what = line.what
        if what == "invoked":
            self._summary = self._task_in = self._select = None
            self._group = self._group_ctx = None
            return []
        if what == "summary":
            self._summary = f
            return []
        if what == "task_in":
            self._task_in = f
            return []
        if what == "kill_select":
            self._select = f
            return []
        if what == "killed":
            return [self._kill_event(rec, f)]
        if what == "oom_group":
            self._group = f["cgroup"]
            ev = self._base(rec, "oom_group_kill", f["cgroup"])
            ctx = self._group_ctx or {}
            add_fields(
                ev, {k: ctx[k] for k in ("constraint", "oom_memcg") if ctx.get(k) is not None}
            )
            return [ev]
        if what in ("reaped", "reap_failed"):
            ev = self._base(rec, "oom_reaped" if what == "reaped" else "oom_reap_failed", None)
            add_fields(ev, f)
            return [ev]
        if what == "already_exiting":
            ev = self._base(rec, "oom_victim_exiting", None)
            add_fields(ev, {k: v for k, v in f.items() if v is not None})
            return [ev]
        if what == "no_killable":
            s = self._summary or {}
            return [self._base(rec, "oom_no_victim", s.get("oom_memcg"))]
        return []

    def _base(self, rec: KmsgRecord, kind: str, cgroup: str | None) -> KernelEvent:
        time = usec_to_iso(rec.usec, self.boot_time)
        return kernel_event(kind, cgroup, time, rec.seq, rec.usec, f"{self.boot_id}:{rec.seq}")

    def _kill_event(self, rec: KmsgRecord, f: dict[str, Any]) -> KernelEvent:
        pid = f["pid"]
        ctx: dict[str, Any] = {}
        summary = self._summary
        if summary is not None and summary["pid"] == pid:
            ctx = {
                "constraint": summary["constraint"],
                "oom_memcg": "/" if summary["global_oom"] else summary["oom_memcg"],
                "task_memcg": summary["task_memcg"],
                "uid": summary["uid"],
            }
            self._summary = None
        elif self._task_in is not None:
            # 4.19: "Task in X killed as a result of limit of Y" names the chosen task's
            # memcg; a sacrificed child is usually in the same memcg
            ctx = {
                "oom_memcg": self._task_in["oom_memcg"],
                "task_memcg": self._task_in["task_memcg"],
                "constraint": CONSTRAINT_MEMCG,
            }
            self._task_in = None
        message = f.get("message")
        if message is None and self._select is not None:
            message = self._select.get("message")
        if self._group is not None:
            ctx.setdefault("oom_group", self._group)
            for key, value in (self._group_ctx or {}).items():
                ctx.setdefault(key, value)
        else:
            self._group_ctx = {k: ctx[k] for k in ("constraint", "oom_memcg") if k in ctx}
        if ctx.get("constraint") is None and message in _MEMCG_MESSAGES:
            # no summary (the report is rate-limited, the kill line is not): a memcg
            # OOM's message says so, and its constraint is CONSTRAINT_MEMCG
            ctx["constraint"] = CONSTRAINT_MEMCG
        cgroup = ctx.get("task_memcg") or ctx.get("oom_group")
        ev = self._base(rec, "oom_kill", cgroup)
        add_fields(
            ev,
            {
                "pid": pid,
                "comm": f["comm"],
                "oom_memcg": ctx.get("oom_memcg"),
                "constraint": ctx.get("constraint"),
                "anon_rss_kb": f.get("anon_rss_kb"),
                "file_rss_kb": f.get("file_rss_kb"),
                "shmem_rss_kb": f.get("shmem_rss_kb"),
                "total_vm_kb": f.get("total_vm_kb"),
                "oom_score_adj": f.get("oom_score_adj"),
                "uid": f.get("uid", ctx.get("uid")),
                "message": message,
            },
        )
        if "pgtables_kb" in f:
            ev["pgtables_kb"] = f["pgtables_kb"]
        if "oom_group" in ctx:
            ev["oom_group"] = ctx["oom_group"]
        ev["cause"] = cause_of(ev)
        return ev


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


def parse_events(
    raws: list[bytes], boot_time: float, boot_id: str = "unknown"
) -> list[KernelEvent]:
    """Convenience: raw kmsg records → events."""
    asm = OomAssembler(boot_time, boot_id)
    records = parse_records(raws)
    events: list[KernelEvent] = []
    for rec in join_continuations(records):
        events.extend(asm.feed(rec))
    return events
