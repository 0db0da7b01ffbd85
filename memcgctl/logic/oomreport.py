"""OOM reports from saved kernel logs: events, and the whole report of one kill.

:func:`saved_events` feeds the normalised lines of :mod:`memcgctl.logic.logtext` to the same
:class:`~memcgctl.logic.oomassembler.OomAssembler` the live log uses, so a saved log yields the
same event objects, with the log's own clock: ``time`` (ISO 8601 UTC) where the
log has a wall clock, ``uptime_s`` where it has kernel timestamps, ``line`` the line
number in the input.

:class:`ReportCollector` keeps, besides, what ``explain-kill`` needs from one report:
the kernel release (stack dump header), the memcg limit lines, RAM and swap pages
(host OOM), the task table (every column layout since 3.x) and the decision lines.
Pure: no I/O.  Memory stays flat: only the report being read and the one asked for
are kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from memcgctl.logic.kmsgparse import KmsgRecord
from memcgctl.logic.logtext import LogLine
from memcgctl.logic.oomassembler import OomAssembler
from memcgctl.logic.oomlines import parse_oom_line
from memcgctl.logic.oomtable import KNOWN_COLUMNS, TaskRow, infer_columns, parse_task_row
from memcgctl.vocab.records import KernelEvent, kernel_event, utc_iso


class SavedLogAssembler(OomAssembler):
    """The live assembler, stamping events with a saved log's own clock; a fragment of a
    report (a summary or ``Kill process`` line without its kill line) is a kill too."""

    fragments = True

    def __init__(self, source: str = "-") -> None:
        super().__init__(0.0, "file")
        self.source = source
        self.line: LogLine | None = None
        self._held: dict[int, LogLine] = {}  # the lines of a fragment not yet flushed

    def feed(self, rec: KmsgRecord) -> list[KernelEvent]:
        if self.line is not None:
            if len(self._held) > 8:
                self._held.clear()
            self._held[rec.seq] = self.line
        return super().feed(rec)

    def _base(self, rec: KmsgRecord, kind: str, cgroup: str | None) -> KernelEvent:
        ll = self._held.get(rec.seq, self.line)
        wall = utc_iso(ll.wall) if ll is not None and ll.wall is not None else None
        usec = rec.usec if rec.usec >= 0 else None
        ev = kernel_event(kind, cgroup, wall, rec.seq, usec, f"{self.source}:{rec.seq}")
        ev["line"] = rec.seq
        if ll is not None:
            if ll.uptime is not None:
                ev["uptime_s"] = round(ll.uptime, 6)
            if ll.clock:
                ev["log_time"] = ll.clock
        return ev


def _record(ll: LogLine) -> KmsgRecord:
    usec = int(ll.uptime * 1e6) if ll.uptime is not None else -1
    return KmsgRecord(6, 0, ll.lineno, usec, "-", ll.text)


# -- one report ----------------------------------------------------------------------


@dataclass
class OomReport:
    """What one OOM report said, in the order the kernel printed it."""

    first_line: int = 0
    time: str | None = None
    uptime_s: float | None = None
    log_time: str = ""
    invoked: dict[str, Any] | None = None
    release: str | None = None
    memcg: dict[str, dict[str, int]] = field(default_factory=dict)  # counter -> usage/limit
    stats_cgroup: str | None = None
    ram_pages: int | None = None
    reserved_pages: int | None = None
    swap_total_kb: int | None = None
    columns: list[str] | None = None
    columns_inferred: bool = False  # no header in the log: the columns read from a row
    table_cut: bool = False  # a task table whose lines are cut short (no name column)
    tasks: list[TaskRow] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    task_in: dict[str, Any] | None = None
    select: dict[str, Any] | None = None
    group: str | None = None
    exiting: dict[str, Any] | None = None
    no_killable: bool = False
    kills: list[KernelEvent] = field(default_factory=list)

    @property
    def layout(self) -> str | None:
        cols = self.columns or []
        if "rss_anon" in cols:
            return "rss_anon"
        if "pgtables_bytes" in cols:
            return "pgtables_bytes"
        if "nr_pmds" in cols:
            return "nr_pmds"
        if "nr_ptes" in cols:
            return "nr_ptes"
        return cols[0] if cols else None

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.first_line,
            "time": self.time,
            "uptime_s": self.uptime_s,
            "log_time": self.log_time or None,
            "kernel_release": self.release,
            "invoked_by": (self.invoked or {}).get("comm"),
            "memcg_counters": self.memcg,
            "ram_pages": self.ram_pages,
            "reserved_pages": self.reserved_pages,
            "swap_total_kb": self.swap_total_kb,
            "table_layout": self.layout,
            "tasks": len(self.tasks),
            "kills": [k.get("pid") for k in self.kills],
        }


class ReportCollector:
    """Streams a saved log: yields every event (as :func:`saved_events`) and remembers
    the reports that ``want`` accepts (default: the last one with a kill)."""

    def __init__(self, source: str = "-", page_size: int = 4096) -> None:
        self.asm = SavedLogAssembler(source)
        self.page_size = page_size
        self.current: OomReport | None = None
        self.chosen: OomReport | None = None
        self.pid: int | None = None
        self._in_table = False

    def _start(self, ll: LogLine) -> OomReport:
        rep = OomReport(
            first_line=ll.lineno,
            time=utc_iso(ll.wall) if ll.wall is not None else None,
            uptime_s=ll.uptime,
            log_time=ll.clock,
        )
        self.current = rep
        self._in_table = False
        return rep

    def feed(self, ll: LogLine) -> list[KernelEvent]:
        self.asm.line = ll
        rec = _record(ll)
        try:
            line = parse_oom_line(ll.text)
        except Exception:  # a parser bug must never stop the stream
            return []
        if line is None:
            return []  # unrelated lines may interleave with the table: keep reading it
        what, f = line.what, line.fields
        rep = self.current
        flushed: list[KernelEvent] = []
        if self.asm.flushes(what, f):
            # a fragment's kill belongs to the report it ended, not to this line's
            flushed = self.asm.flush()
            if rep is not None:
                self._take(rep, flushed)
        if what == "invoked":
            rep = self._start(ll)
            rep.invoked = f
        elif what in (
            "killed",
            "kill_select",
            "summary",
            "task_in",
            "tasks_state",
            "tasks_header",
            "task_row",
        ) and (rep is None or (rep.kills and rep.group is None)):
            # the report was rate-limited (only its last lines), or a new OOM's lines
            # follow a finished one without an "invoked oom-killer" line
            rep = self._start(ll)
        if rep is not None:
            self._note(rep, what, f)
        events = self.asm.feed(rec)
        if rep is not None:
            self._take(rep, events)
        return flushed + events

    def finish(self) -> list[KernelEvent]:
        """The end of the log: a fragment still held is a kill of the last report."""
        events = self.asm.flush()
        if self.current is not None:
            self._take(self.current, events)
        return events

    def _take(self, rep: OomReport, events: list[KernelEvent]) -> None:
        for ev in events:
            if ev.get("kind") == "oom_kill":
                rep.kills.append(ev)
                if self.pid is None or ev.get("pid") == self.pid:
                    self.chosen = rep
            elif ev.get("kind") == "oom_victim_exiting" and ev.get("pid") == self.pid:
                self.chosen = rep

    def _note(self, rep: OomReport, what: str, f: dict[str, Any]) -> None:
        if what == "task_row":
            if rep.columns is None and not rep.tasks and not rep.table_cut:
                # the log begins inside the table (an excerpt): the columns from the row
                cols = infer_columns(f["rest"])
                if cols is not None:
                    rep.columns, rep.columns_inferred = cols, True
                    self._in_table = True
            if self._in_table and rep.columns is not None:
                row = parse_task_row(
                    rep.columns, f["pid"], f["rest"], len(rep.tasks), self.page_size
                )
                if row is not None:  # a row it cannot read is left out
                    rep.tasks.append(row)
            return
        self._in_table = False
        if what == "tasks_header":
            cols = f["columns"]
            if not cols or cols[-1] != "name":
                rep.table_cut = True
                return
            if rep.columns is None and all(c in KNOWN_COLUMNS for c in cols[:-1]):
                rep.columns = cols
                self._in_table = True
        elif what == "cpu" and rep.release is None:
            rep.release = f["release"]
        elif what == "memcg_usage":
            rep.memcg.setdefault(f["counter"], {"usage_kb": f["usage"], "limit_kb": f["limit"]})
        elif what == "memcg_stats" and rep.stats_cgroup is None:
            rep.stats_cgroup = f["cgroup"]
        elif what == "ram_pages" and rep.ram_pages is None:
            rep.ram_pages = f["pages"]
        elif what == "reserved_pages" and rep.reserved_pages is None:
            rep.reserved_pages = f["pages"]
        elif what == "swap_total" and rep.swap_total_kb is None:
            rep.swap_total_kb = f["kb"]
        elif what == "summary":
            rep.summary = f
            if self.pid is None or f["pid"] == self.pid:
                self.chosen = rep  # a log cut after the summary still names the kill
        elif what == "task_in":
            rep.task_in = f
        elif what == "kill_select":
            rep.select = f
        elif what == "oom_group":
            rep.group = f["cgroup"]
        elif what == "already_exiting":
            rep.exiting = f
        elif what == "no_killable":
            rep.no_killable = True


def saved_events(lines: Iterable[LogLine], source: str = "-") -> Iterator[KernelEvent]:
    """The events of a saved log, in log order."""
    asm = SavedLogAssembler(source)
    for ll in lines:
        asm.line = ll
        yield from asm.feed(_record(ll))
    yield from asm.flush()


def collect(
    lines: Iterable[LogLine], pid: int | None = None, source: str = "-"
) -> tuple[OomReport | None, int]:
    """The report of the kill of ``pid`` (the last one if several; default: the last
    kill in the log), and how many kills the log held."""
    col = ReportCollector(source)
    col.pid = pid
    kills = 0
    for ll in lines:
        for ev in col.feed(ll):
            if ev.get("kind") == "oom_kill":
                kills += 1
    kills += sum(1 for ev in col.finish() if ev.get("kind") == "oom_kill")
    return col.chosen, kills


# -- --since / --until on the log's own clock --------------------------------------------


class LogBound:
    """A ``--since``/``--until`` value for a saved log: a date and time (ISO 8601; without
    a zone it is this machine's local time, as the log's local timestamps are read), a
    duration before now (``2h``), or seconds since boot (``1234.5``, for ``dmesg`` and
    kmsg timestamps)."""

    def __init__(self, text: str) -> None:
        from memcgctl.vocab.errors import UsageProblem

        self.text = text
        self.uptime: float | None = None
        self.iso: str | None = None
        value = text.strip()
        if value.replace(".", "", 1).isdigit() and value.isascii():
            self.uptime = float(value)
            return
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            dt = None
        if dt is not None:
            ts = dt.timestamp()  # naive: local time
            self.iso = utc_iso(ts)
            return
        from memcgctl.vocab.units import parse_duration_ms

        try:
            ms = parse_duration_ms(value)
        except UsageProblem:
            raise UsageProblem(
                f"{text!r}: not a time (give a date and time like 2026-11-30T13:00, a "
                "duration like 2h, or seconds since boot like 1234.5)"
            ) from None
        import time

        self.iso = utc_iso(time.time() - ms / 1000)

    def after(self, ev: KernelEvent) -> bool | None:
        """Whether ``ev`` is at or after the bound; None if the event lacks that clock."""
        if self.uptime is not None:
            up = ev.get("uptime_s")
            return None if up is None else float(up) >= self.uptime
        t = ev.get("time")
        return None if t is None else str(t) >= str(self.iso)

    def before(self, ev: KernelEvent) -> bool | None:
        if self.uptime is not None:
            up = ev.get("uptime_s")
            return None if up is None else float(up) <= self.uptime
        t = ev.get("time")
        return None if t is None else str(t) <= str(self.iso)


def within(ev: KernelEvent, since: LogBound | None, until: LogBound | None) -> bool:
    """An event without the bound's clock is kept: the log cannot say it is outside."""
    if since is not None and since.after(ev) is False:
        return False
    return not (until is not None and until.before(ev) is False)
