"""One OOM report of a saved kernel log, as data: what the kernel printed about one
OOM (release, memcg limit lines, RAM and swap pages, the task table in every column
layout since 3.x, the decision lines and the kills), and :func:`note_line`, how one
understood line adds to it.  The reader that decides which report a line belongs to is
:class:`~memcgctl.logic.oomassembler.OomAssembler` (the one state machine over OOM
lines); ``--since``/``--until`` on a log's own clock are :class:`LogBound`.  Pure: no
I/O.
"""

from __future__ import annotations

from memcgctl.logic.logtext import LogLine
from memcgctl.logic.oomtable import KNOWN_COLUMNS, TaskRow, infer_columns, parse_task_row
from memcgctl.vocab.records import KernelEvent, utc_iso
from memcgctl.vocab.structs import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

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
    in_table: bool = False  # the last understood line was the header or a row of the table

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


def new_report(ll: LogLine) -> OomReport:
    """A report whose first line is ``ll``."""
    return OomReport(
        first_line=ll.lineno,
        time=utc_iso(ll.wall) if ll.wall is not None else None,
        uptime_s=ll.uptime,
        log_time=ll.clock,
    )


def note_line(rep: OomReport, what: str, f: dict[str, Any], page_size: int = 4096) -> None:
    """What one understood line (:func:`~memcgctl.logic.oomlines.parse_oom_line`) adds
    to the report it belongs to."""
    if what == "task_row":
        if rep.columns is None and not rep.tasks and not rep.table_cut:
            # the log begins inside the table (an excerpt): the columns from the row
            cols = infer_columns(f["rest"])
            if cols is not None:
                rep.columns, rep.columns_inferred = cols, True
                rep.in_table = True
        if rep.in_table and rep.columns is not None:
            row = parse_task_row(rep.columns, f["pid"], f["rest"], len(rep.tasks), page_size)
            if row is not None:  # a row it cannot read is left out
                rep.tasks.append(row)
        return
    rep.in_table = False
    if what == "tasks_header":
        cols = f["columns"]
        if not cols or cols[-1] != "name":
            rep.table_cut = True
            return
        if rep.columns is None and all(c in KNOWN_COLUMNS for c in cols[:-1]):
            rep.columns = cols
            rep.in_table = True
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


# -- --since / --until on the log's own clock --------------------------------------------


class LogBound:
    """A ``--since``/``--until`` value for a saved log: a date and time (ISO 8601; without
    a zone it is this machine's local time, as the log's local timestamps are read), a
    duration before now (``2h``), or seconds since boot (``1234.5``, for ``dmesg`` and
    kmsg timestamps)."""

    def __init__(self, text: str) -> None:
        from datetime import datetime  # here: not resident in the daemon (0.3 MiB)

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
