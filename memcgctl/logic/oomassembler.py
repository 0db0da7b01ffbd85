"""The one reader of OOM lines, live or saved (pure, no I/O).

:class:`OomAssembler` reads the lines of the kernel log one by one, each parsed once
(:func:`~memcgctl.logic.oomlines.parse_oom_line`), and turns the lines of one OOM
(summary + kill line) into one ``oom_kill`` event (time, kind, cgroup, source, pid,
comm, oom_memcg, constraint, the rss sizes, oom_score_adj, uid, as far as the log
tells), and the other OOM lines (memory.oom.group, oom_reaper, a victim already exiting,
no killable process) into their own events.  Reading a saved log (``source``) it stamps
the events with the log's own clock and, asked to (``reports``), keeps the whole
:class:`~memcgctl.logic.oomreport.OomReport` of the kill ``explain-kill`` wants.

:func:`kmsg_events` is the kmsg → events pipeline (records parsed, pre-filtered,
``pr_cont`` fragments joined, fed to a reader) that the daemon, ``events --follow``
and ``explain-kill``'s live report share; :func:`saved_events` and
:func:`collect` read a saved log.  :func:`cause_of` tells a memcg OOM from a host-wide
one.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from memcgctl.logic.kmsgparse import (
    KmsgRecord,
    join_continuations,
    parse_record,
    parse_records,
    usec_to_iso,
)
from memcgctl.logic.logtext import LogLine
from memcgctl.logic.oomlines import MEMCG_OOM_MESSAGE, OomLine, parse_oom_line
from memcgctl.logic.oomreport import OomReport, new_report, note_line
from memcgctl.vocab.records import KernelEvent, add_fields, kernel_event, utc_iso
from memcgctl.vocab.reportnotes import LogGap, gap_code

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_MEMCG_MESSAGES = (MEMCG_OOM_MESSAGE,)


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


# a report's lines that, after a kill and no memory.oom.group, begin the next report
_REPORT_BODY = frozenset(
    ("killed", "kill_select", "summary", "task_in", "tasks_state", "tasks_header", "task_row")
)


class OomAssembler:
    """Feed records in sequence order; get events (dicts with the event keys).

    State is only what one OOM report needs: the last summary (5.0+) or ``Task in``
    line (4.19), the last ``Kill process`` line (4.19), and the memory.oom.group the
    current OOM is killing.  A ``Killed process`` line without a summary (the report
    is rate-limited, the kill line is not) still yields an event with what it says.

    ``source`` (the saved log's name) reads a saved log: events carry the log's own
    clock (``time`` where the line has a wall clock, ``uptime_s`` where it has a kernel
    timestamp, ``line`` its line number), and a fragment of a report (a saved log may
    hold only part of one: ``dmesg | grep oom-kill``, a paste cut before the ``Killed
    process`` line) is still a kill: a summary or a ``Kill process`` line that no kill
    line follows (:meth:`flush`).  The live log always has the kill line.  ``reports``
    also keeps the report of the kill of ``pid`` (default: the last kill) in
    :attr:`chosen`; memory stays flat: only the report being read and that one are kept.
    """

    def __init__(
        self,
        boot_time: float = 0.0,
        boot_id: str = "unknown",
        *,
        source: str | None = None,
        reports: bool = False,
        pid: int | None = None,
        page_size: int = 4096,
    ) -> None:
        self.boot_time = boot_time
        self.boot_id = boot_id
        self.source = source
        self.fragments = source is not None
        self.reports = reports
        self.pid = pid
        self.page_size = page_size
        self.current: OomReport | None = None  # the report being read
        self.chosen: OomReport | None = None  # the report of the kill asked for
        self._line: LogLine | None = None  # the saved line being read
        self._pending_lines: dict[int, LogLine] = {}  # ... and those of a fragment
        self._summary: dict[str, Any] | None = None
        self._task_in: dict[str, Any] | None = None
        self._select: dict[str, Any] | None = None
        self._group: str | None = None
        self._group_ctx: dict[str, Any] | None = None
        # the line (record) of a summary / Kill process line that no kill line used yet
        self._pending_summary: KmsgRecord | None = None
        self._pending_select: KmsgRecord | None = None
        self._header = False  # an "invoked oom-killer" line began the current report
        self._killed = False  # ... and it has had its kill
        # when the kernel invoked the OOM killer of the report being read (its
        # "invoked oom-killer" line): the moment the memcg ran out (``events --follow``
        # stamps its under_oom with it)
        self.invoked_time: str | None = None

    def feed_line(self, ll: LogLine) -> list[KernelEvent]:
        """One line of a saved log (:mod:`memcgctl.logic.logtext`)."""
        usec = int(ll.uptime * 1e6) if ll.uptime is not None else -1
        return self.feed(KmsgRecord(6, 0, ll.lineno, usec, "-", ll.text), ll)

    def feed(self, rec: KmsgRecord, ll: LogLine | None = None) -> list[KernelEvent]:
        """One record; ``ll``: its saved line (with ``source``; a live record read for
        its report becomes one, its clock from the boot time)."""
        if self.fragments and ll is None:
            up = rec.usec / 1e6
            return self.feed_line(LogLine(rec.seq, self.boot_time + up, up, rec.text, True, ""))
        self._line = ll
        try:
            line = parse_oom_line(rec.text)
        except Exception:  # a parser bug must never stop the stream
            return []
        if line is None:
            return []  # unrelated lines may interleave with the table: keep reading it
        rep = self.current
        flushed: list[KernelEvent] = []
        if self.flushes(line.what, line.fields):
            # a fragment's kill belongs to the report it ended, not to this line's
            flushed = self.flush()
            if rep is not None:
                self._take(rep, flushed)
        if self.reports and ll is not None:
            rep = self._report_of(line, ll)
        events = self._assemble(rec, line)
        if rep is not None:
            self._take(rep, events)
        return flushed + events

    def finish(self) -> list[KernelEvent]:
        """The end of the log: a fragment still held is a kill of the last report."""
        events = self.flush()
        if self.current is not None:
            self._take(self.current, events)
        return events

    def _report_of(self, line: OomLine, ll: LogLine) -> OomReport | None:
        """The report ``line`` belongs to (a new one where it begins one), noted."""
        what, f = line.what, line.fields
        rep = self.current
        if what == "invoked":
            rep = self.current = new_report(ll)
            rep.invoked = f
        elif what in _REPORT_BODY and (rep is None or (rep.kills and rep.group is None)):
            # the report was rate-limited (only its last lines), or a new OOM's lines
            # follow a finished one without an "invoked oom-killer" line
            rep = self.current = new_report(ll)
        if rep is not None:
            note_line(rep, what, f, self.page_size)
            if what == "summary" and (self.pid is None or f["pid"] == self.pid):
                self.chosen = rep  # a log cut after the summary still names the kill
        return rep

    def _take(self, rep: OomReport, events: list[KernelEvent]) -> None:
        if not self.reports:
            return
        for ev in events:
            if ev.get("kind") == "oom_kill":
                rep.kills.append(ev)
                if self.pid is None or ev.get("pid") == self.pid:
                    self.chosen = rep
            elif ev.get("kind") == "oom_victim_exiting" and ev.get("pid") == self.pid:
                self.chosen = rep

    def _assemble(self, rec: KmsgRecord, line: OomLine) -> list[KernelEvent]:
        """The events of one understood line (a fragment it ends is flushed already)."""
        f = line.fields
        what = line.what
        if what == "invoked":
            self.invoked_time = usec_to_iso(rec.usec, self.boot_time)
            self._summary = self._task_in = self._select = None
            self._group = self._group_ctx = None
            self._header, self._killed = True, False
            return []
        if what in ("summary", "task_in", "kill_select") and self._killed:
            self._header = self._killed = False  # a new report without its header
        if what == "summary":
            self._summary = f
            self._pending_summary = rec
            self._hold(rec)
            return []
        if what == "task_in":
            self._task_in = f
            return []
        if what == "kill_select":
            self._select = f
            self._pending_select = rec
            self._hold(rec)
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

    def _hold(self, rec: KmsgRecord) -> None:
        """Keep the saved line of a summary / ``Kill process`` line: a fragment's kill
        is stamped with it."""
        if self._line is not None:
            if len(self._pending_lines) > 8:
                self._pending_lines.clear()
            self._pending_lines[rec.seq] = self._line

    def _base(self, rec: KmsgRecord, kind: str, cgroup: str | None) -> KernelEvent:
        if self.source is None:
            time = usec_to_iso(rec.usec, self.boot_time)
            return kernel_event(kind, cgroup, time, rec.seq, rec.usec, f"{self.boot_id}:{rec.seq}")
        ll = self._pending_lines.get(rec.seq, self._line)
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

    def flushes(self, what: str, fields: dict[str, Any]) -> bool:
        """Whether this line ends the fragment the assembler holds: a new report, or a
        ``Kill process`` line of another task than the pending summary's (a grep of
        both kinds of line)."""
        if what in ("invoked", "summary", "task_in"):
            return self._pending_summary is not None or self._pending_select is not None
        if what != "kill_select":
            return False
        if self._pending_select is not None:
            return True
        s = self._summary if self._pending_summary is not None else None
        return s is not None and s["pid"] is not None and s["pid"] != fields.get("pid")

    def flush(self) -> list[KernelEvent]:
        """With ``fragments``: the kill that a summary or a ``Kill process`` line names
        when no ``Killed process`` line followed (the log ends, or the next report
        begins); what the log does not say is None and ``notes`` says why (codes,
        :class:`~memcgctl.vocab.reportnotes.LogGap`)."""
        srec, sel = self._pending_summary, self._pending_select
        self._pending_summary = self._pending_select = None
        if not self.fragments or (srec is None and sel is None):
            return []
        select = self._select if sel is not None else None
        summary = self._summary if srec is not None else None
        rec = srec or sel
        assert rec is not None
        f: dict[str, Any] = {"pid": None, "comm": None}
        if summary is not None:
            f["pid"], f["comm"] = summary["pid"], summary["comm"]
        if select is not None:
            f["pid"], f["comm"] = select["pid"], select["comm"]
            f["message"] = select.get("message")
            if sel is not None and (srec is None or sel.seq > srec.seq):
                rec = sel
        notes = [gap_code(LogGap.NO_KILL_LINE, "summary" if select is None else "kill_select")]
        ev = self._kill_event(rec, f, notes)
        self._summary = self._select = None
        return [ev]

    def _summary_ctx(self, summary: dict[str, Any]) -> dict[str, Any]:
        return {
            "constraint": summary["constraint"],
            "oom_memcg": "/" if summary["global_oom"] else summary["oom_memcg"],
            "task_memcg": summary["task_memcg"],
            "uid": summary["uid"],
        }

    def _kill_event(
        self, rec: KmsgRecord, f: dict[str, Any], notes: list[str] | None = None
    ) -> KernelEvent:
        pid = f["pid"]
        notes = list(notes or [])
        ctx: dict[str, Any] = {}
        summary = self._summary
        select = self._select
        self._pending_summary = self._pending_select = None
        if summary is not None and summary["pid"] == pid:
            ctx = self._summary_ctx(summary)
            self._summary = None
        elif (
            self.fragments
            and summary is not None
            and self._group is None
            and (summary["pid"] is None or (select is not None and select["pid"] == summary["pid"]))
        ):
            # the summary was cut before its pid, or names the task the kernel chose
            # while another (a child, the thread group) was killed: its memcgs are the
            # chosen task's
            ctx = self._summary_ctx(summary)
            self._summary = None
            if summary["pid"] is not None:
                notes.append(gap_code(LogGap.CHOSE_OTHER, summary["pid"]))
        if summary is not None and summary.get("cut") and ctx:
            notes.append(gap_code(LogGap.SUMMARY_CUT, summary["cut"]))
        if ctx and summary is not None and summary["constraint"] is None:
            notes.append(gap_code(LogGap.NO_CONSTRAINT))
        if not ctx and self._task_in is not None:
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
        if self.fragments and not self._header:
            notes.append(gap_code(LogGap.NO_HEADER))
        self._killed = True
        if f.get("partial") and self.fragments:
            notes.append(gap_code(LogGap.KILL_LINE_CUT))
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
        if notes:
            ev["notes"] = notes
        return ev


# -- the pipelines -------------------------------------------------------------------


def kmsg_events(
    asm: OomAssembler, raws: list[bytes], every_record: bool = False
) -> Iterator[KernelEvent]:
    """The kmsg → events pipeline: raw /dev/kmsg records parsed (only those that may be
    part of an OOM report, unless ``every_record``: a task table's rows carry no OOM
    keyword), ``pr_cont`` fragments joined, fed in order to ``asm``.  Lazy: each event
    comes when its record has been read, so the caller sees ``asm``'s state (its
    ``invoked_time``) as of that event."""
    if every_record:
        records = [r for r in (parse_record(raw) for raw in raws) if r is not None]
    else:
        records = parse_records(raws)
    for rec in join_continuations(records):
        yield from asm.feed(rec)


def saved_events(lines: Iterable[LogLine], source: str = "-") -> Iterator[KernelEvent]:
    """The events of a saved log, in log order."""
    asm = OomAssembler(source=source)
    for ll in lines:
        yield from asm.feed_line(ll)
    yield from asm.flush()


def collect(
    lines: Iterable[LogLine], pid: int | None = None, source: str = "-"
) -> tuple[OomReport | None, int]:
    """The report of the kill of ``pid`` (the last one if several; default: the last
    kill in the log), and how many kills the log held."""
    asm = OomAssembler(source=source, reports=True, pid=pid)
    kills = 0
    for ll in lines:
        kills += sum(1 for ev in asm.feed_line(ll) if ev.get("kind") == "oom_kill")
    kills += sum(1 for ev in asm.finish() if ev.get("kind") == "oom_kill")
    return asm.chosen, kills
