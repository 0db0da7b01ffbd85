"""The lines of one OOM assembled into events (pure functions, no I/O).

:class:`OomAssembler` turns the lines of one OOM (summary + kill line) into one
``oom_kill`` event (time, kind, cgroup, source, pid, comm, oom_memcg, constraint, the rss
sizes, oom_score_adj, uid, as far as the log tells), and the other OOM lines (memory.oom.group,
oom_reaper, a victim already exiting, no killable process) into their own events;
:func:`cause_of` tells a memcg OOM from a host-wide one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memcgctl.logic.kmsgparse import KmsgRecord, join_continuations, parse_records, usec_to_iso
from memcgctl.logic.oomlines import parse_oom_line
from memcgctl.vocab.records import KernelEvent, add_fields, kernel_event

_MEMCG_MESSAGES = ("Memory cgroup out of memory",)


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

    #: a saved log may hold only part of a report (``dmesg | grep oom-kill``, a paste cut
    #: before the ``Killed process`` line): with ``fragments`` a summary or a ``Kill
    #: process`` line that no kill line follows is still a kill (``flush``); the live log
    #: always has the kill line, so it keeps the default
    fragments = False

    def __init__(self, boot_time: float, boot_id: str = "unknown") -> None:
        self.boot_time = boot_time
        self.boot_id = boot_id
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
            out = self.flush()
            self.invoked_time = usec_to_iso(rec.usec, self.boot_time)
            self._summary = self._task_in = self._select = None
            self._group = self._group_ctx = None
            self._header, self._killed = True, False
            return out
        if what in ("summary", "task_in", "kill_select") and self._killed:
            self._header = self._killed = False  # a new report without its header
        if what == "summary":
            out = self.flush()
            self._summary = f
            self._pending_summary = rec
            return out
        if what == "task_in":
            out = self.flush()
            self._task_in = f
            return out
        if what == "kill_select":
            out = self.flush() if self.flushes(what, f) else []
            self._select = f
            self._pending_select = rec
            return out
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
        begins); what the log does not say is None and ``notes`` says why."""
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
        which = "the oom-kill summary" if select is None else "the 'Kill process' line"
        notes = [f"no 'Killed process' line in the log: only {which} names this kill"]
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
                notes.append(
                    f"the kernel chose pid {summary['pid']} and killed pid {pid}: the "
                    "memcgs are the chosen task's"
                )
        if summary is not None and summary.get("cut") and ctx:
            notes.append(f"the oom-kill summary is cut short at {summary['cut']!r}")
        if ctx and summary is not None and summary["constraint"] is None:
            notes.append(
                "the oom-kill summary prints no constraint: it is known only from a "
                "'Memory cgroup out of memory' message"
            )
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
            notes.append(
                "no 'invoked oom-killer' line before this kill: the report began before "
                "the log (or was rate-limited)"
            )
        self._killed = True
        if f.get("partial") and self.fragments:
            notes.append("the 'Killed process' line is cut short: its sizes are unknown")
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
