"""``events`` (OOM notifications: history and --follow) and ``counters`` (kill counters).

Every kernel kill seen here is appended to the journal (deduplicated by boot id and the
kmsg sequence number), so counters stay complete after the kernel's ring buffer rotates.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from memcgctl.commands.common import CgroupName, pass_env, pid_option, pids_option
from memcgctl.env import Env
from memcgctl.render.diag import diagnostic
from memcgctl.render.output import (
    Output,
    draw_table,
    emit_json,
    emit_json_line,
    output_options,
    say,
)
from memcgctl.render.views import COUNTER_FIELDS
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import MemcgctlError, UsageProblem, Vanished
from memcgctl.vocab.records import Event, KernelEvent


class _Recorder:
    """Appends kernel kills to the journal; warns once if the state dir is not writable."""

    def __init__(self, env: Env) -> None:
        from memcgctl.state.journal import Journal

        self.journal = Journal(env.state_dir)
        self.warned = False

    def record(self, events: Sequence[Event]) -> bool:
        """Journal the kills among events; False if that failed."""
        from memcgctl.vocab.records import journal_copy

        kills = [journal_copy(e) for e in events if e.get("kind") == "oom_kill"]
        if not kills:
            return True
        try:
            self.journal.append(kills)
            return True
        except MemcgctlError as exc:
            self.warn(exc)
            return False

    def warn(self, exc: MemcgctlError) -> None:
        if not self.warned:
            self.warned = True
            diagnostic(f"not journaling kernel kills: {exc.message}")


def _open_kmsg(env: Env, quiet: bool = False) -> Any:
    from memcgctl.kernel.kmsgdev import KmsgReader

    try:
        return KmsgReader(env.kmsg).open()
    except UsageProblem:
        raise  # --kmsg names something that is no kernel log: say so (exit 2)
    except MemcgctlError as exc:
        if not quiet:
            diagnostic(f"kernel log unavailable, using the journal only: {exc.message}")
        return None


def kernel_history(
    env: Env, recorder: _Recorder, root: CgroupPath = ROOT, after_seq: int | None = None
) -> tuple[Any, Any, list[KernelEvent]]:
    """Open the kernel log, parse the ring's history (only records after ``after_seq``
    when given), journal its kills.

    Returns (reader, follower, events)."""
    from memcgctl.watch.follower import Follower

    def journal_kill(ev: Event) -> None:
        recorder.record([ev])

    reader = _open_kmsg(env)
    follower = Follower(
        env.fs,
        root,
        reader,
        env.proc.boot_time(),
        env.proc.boot_id(),
        emit=lambda ev: None,
        on_kernel_kill=journal_kill,
    )
    events: list[KernelEvent] = []
    if reader is not None:
        raws = reader.read_available()
        if after_seq is not None and raws:
            from bisect import bisect_right

            from memcgctl.logic.kmsgparse import record_seq

            newest = record_seq(raws[-1])
            if after_seq > newest:
                # a cursor past the ring's end would hide every kill: forged or stale
                recorder.journal.discard_cursor(
                    f"seq {after_seq} is past the kernel log's newest record {newest}"
                )
            else:
                # the ring is in sequence order: find the first record after the cursor
                raws = raws[bisect_right(raws, after_seq, key=record_seq) :]
        events = follower.feed_kmsg(raws, live=False)
        recorder.record(events)
    return reader, follower, events


@click.command()
@click.argument("cgroup", required=False, type=CgroupName())
@pid_option()
@click.option("--follow", "-f", is_flag=True, help="Keep running and print new events live.")
@click.option(
    "--since",
    metavar="DURATION",
    help="Only events of the last DURATION (e.g. 10m, 2h).  With --follow: print these "
    "first.  With --from: also a date and time (2026-11-30T13:00) or seconds since boot.",
)
@click.option(
    "--from",
    "from_file",
    metavar="FILE",
    help="Read a saved kernel log instead (- for standard input): dmesg, dmesg -T/-x, "
    "syslog, journalctl -k (short, short-iso, short-precise, -o json) or kmsg records.",
)
@click.option(
    "--until",
    metavar="TIME",
    help="With --from: only events up to TIME (a date and time, a duration before now, or "
    "seconds since boot).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON document ({root, since, events: [...]}); with --follow, a stream: "
    "one object per line.",
)
@click.option("--json-lines", "json_lines", is_flag=True, help="One JSON object per line.")
@pass_env
def events(
    env: Env,
    cgroup: str | None,
    pid: int | None,
    follow: bool,
    since: str | None,
    from_file: str | None,
    until: str | None,
    as_json: bool,
    json_lines: bool,
) -> None:
    """OOM events of CGROUP's subtree (default: the whole host).

    Sources: the kernel log (kills with victim, memcg, constraint and sizes; oom.group,
    reaper), v1 eventfd notifications (under_oom, oom_resolved), v2 memory.events
    (oom, oom_kill, oom_group_kill, max, high) and the journal (kills done by memcgctl:
    user_kill while handling an OOM, manual_kill otherwise).  Without --follow: the
    history still in the kernel log plus the journal.  --follow tails live, the journal
    too; it prints history only with --since.

    --from FILE reads a saved log (any common format, several mixed); CGROUP is then
    matched against the paths as the log wrote them, and --since/--until use the log's
    own clock: a date and time (2026-11-30T13:00, local time unless a zone is given), a
    duration before now (2h), or seconds since boot (1234.5) for dmesg timestamps.
    """
    if from_file is not None:
        if follow or pid is not None:
            raise UsageProblem("--from reads a saved log: no --follow or --pid")
        if as_json and json_lines:
            raise UsageProblem("--json and --json-lines: give one of them")
        _events_from_file(from_file, cgroup, since, until, as_json, json_lines)
        return
    if until is not None:
        raise UsageProblem("--until needs --from (a saved log)")
    from memcgctl.logic.events import matches, merge_history
    from memcgctl.render.eventline import format_event
    from memcgctl.vocab.records import utc_iso_before
    from memcgctl.vocab.units import parse_duration_ms

    if as_json and json_lines:
        raise UsageProblem("--json and --json-lines: give one of them")
    root = env.target_cgroup(cgroup, pid)
    since_iso = None
    if since is not None:
        since_iso = utc_iso_before(parse_duration_ms(since, "10m, 2h or 24h") / 1000)
    # a stream is one object per line; a history with --json is one document
    lines = json_lines or (as_json and follow)

    def show(ev: Event) -> None:
        if lines:
            emit_json_line(ev)
        else:
            say(format_event(ev))

    recorder = _Recorder(env)
    reader, follower, kernel = kernel_history(env, recorder, root)
    if follow:
        # from here on, kills appended by the daemon and kill-all are printed live
        follower.tail_journal(recorder.journal)
    if not follow or since_iso is not None:
        history = merge_history(kernel, recorder.journal.read())
        shown = [ev for ev in history if matches(ev, root, since_iso)]
        if as_json and not follow:
            emit_json({"root": root, "since": since_iso, "events": shown})
        else:
            for ev in shown:
                show(ev)
        if not follow and not shown and not (as_json or json_lines):
            say(f"no OOM events for {root}", err=True)
    if not follow:
        return
    follower.emit = show
    follower.rescan()
    diagnostic(f"following OOM events of {root} (Ctrl-C to stop)")
    try:
        follower.run()
    except KeyboardInterrupt:
        pass
    finally:
        follower.close()
        if reader is not None:
            reader.close()


def _events_from_file(
    path: str,
    cgroup: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
    json_lines: bool,
) -> None:
    """One JSON document with --json (the events in a named array, as for the live
    history), one object per line with --json-lines (a 100 MB log streams)."""
    from memcgctl.inputs.logfile import read_chunks
    from memcgctl.logic.events import matches
    from memcgctl.logic.logtext import read_lines
    from memcgctl.logic.oomreport import LogBound, saved_events, within
    from memcgctl.render.eventline import format_event

    try:  # matched against the log's own paths: not resolved in this hierarchy
        root = CgroupPath(cgroup or "/")
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    lo = LogBound(since) if since is not None else None
    hi = LogBound(until) if until is not None else None
    kept: list[Event] = []
    count = 0
    for ev in saved_events(read_lines(read_chunks(path)), path):
        if not matches(ev, root, None) or not within(ev, lo, hi):
            continue
        count += 1
        if json_lines:
            emit_json_line(ev)
        elif as_json:
            kept.append(ev)
        else:
            say(format_event(ev))
    if as_json:
        emit_json({"root": root, "from": path, "since": since, "until": until, "events": kept})
    elif not json_lines and not count:
        say(f"no OOM events for {root} in {path}", err=True)


def _kernel_counters(env: Env, cgs: list[CgroupPath]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(local, hierarchical) kernel counters per cgroup (None where the kernel has none)."""
    from memcgctl.logic.counters import pick_kernel_counters, subtree_sum

    fs = env.fs
    local: dict[str, Any] = {}
    hier: dict[str, Any] = {}
    if fs.version == 1:
        seen: dict[str, dict[str, int]] = {}
        for cg in cgs:
            for sub in fs.walk(cg):
                if sub in seen:
                    continue
                try:
                    seen[sub] = pick_kernel_counters(fs.oom_control(sub))
                except Vanished:
                    continue
        for cg in cgs:
            local[cg] = seen.get(cg)
            hier[cg] = subtree_sum(cg, seen) if cg in seen else None
        return local, hier
    for cg in cgs:
        try:
            loc = pick_kernel_counters(fs.events(cg, local=True))
            h = pick_kernel_counters(fs.events(cg))
        except Vanished:
            loc, h = {}, {}
        local[cg] = loc or None
        hier[cg] = h or None
    return local, hier


def _local_kills(env: Env) -> dict[str, int]:
    """The kernel's local oom_kill counter of every memory cgroup (v1
    memory.oom_control, v2 memory.events.local; cgroups without one left out)."""
    fs = env.fs
    out: dict[str, int] = {}
    for cg in fs.walk():
        try:
            values = fs.oom_control(cg) if fs.version == 1 else fs.events(cg, local=True)
        except (Vanished, OSError):
            continue
        if "oom_kill" in values:
            out[cg] = values["oom_kill"]
    return out


@click.command()
@click.argument("cgroups", nargs=-1, type=CgroupName())
@pids_option("Also show the memory cgroup of PID (repeatable).")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "prometheus"]),
    default=None,
    help="prometheus: the text exposition format for node_exporter's textfile collector.",
)
@output_options
@pass_env
def counters(
    env: Env, cgroups: tuple[str, ...], pids: tuple[int, ...], fmt: str | None, out: Output
) -> None:
    """OOM kill counters of each CGROUP (default: every memory cgroup).

    local / hierarchical: the kernel's counters.  by_cause: kills of tasks in the
    subtree seen in the kernel log and the journal — system (host-wide OOM), memcg (a
    cgroup limit), user (kills memcgctl did while handling an OOM: the daemon's, and
    kill-all of a memcg under OOM; a kill-all of a healthy memcg is a manual_kill,
    counted nowhere).  complete: whether the log and
    journal still cover every kill the kernel counted.
    """
    from memcgctl.logic.counters import by_cause, entry, prometheus
    from memcgctl.logic.events import merge_history
    from memcgctl.logic.kmsgparse import usec_to_iso
    from memcgctl.state import totals as tot

    if fmt == "prometheus" and (out.json or out.plain):
        raise UsageProblem(
            "--format prometheus prints the exposition format: not with --json or --plain"
        )
    if fmt == "json" and out.plain:
        raise UsageProblem("--format json and --plain: give one of them")
    fs = env.fs
    cgs = [fs.resolve(c) for c in cgroups] + [env.cgroup_of_pid(p) for p in pids]
    if not cgroups and not pids:
        cgs = list(fs.walk())
    cgs = list(dict.fromkeys(cgs))
    recorder = _Recorder(env)
    journal = recorder.journal
    boot_id = env.proc.boot_id()
    boot_time = env.proc.boot_time()
    boot_iso = usec_to_iso(0, boot_time)
    journal.boot_id = boot_id
    # the running totals (memcgctl.state.totals): a new epoch at a new boot
    totals: dict[str, Any] | None = None
    try:
        totals = journal.totals(boot_id, boot_time)
    except MemcgctlError as exc:
        recorder.warn(exc)
    # kills up to the cursor are in the journal already: parse only what came after
    cursor = journal.read_cursor(boot_id)
    if (
        cursor is not None
        and totals is not None
        and not tot.kmsg_seq_known(totals, boot_id, cursor)
    ):
        # the cursor is written as the seq of a journaled kill: one that names none is
        # not ours, and trusting it could hide kernel kills
        journal.discard_cursor(f"seq {cursor} names no journaled kill")
        cursor = None
    reader, _, kernel = kernel_history(
        env, recorder, after_seq=cursor if totals is not None else None
    )
    if reader is not None:
        reader.close()
        last = max((int(ev["seq"]) for ev in kernel if ev.get("kind") == "oom_kill"), default=None)
        if last is not None and not recorder.warned:
            with contextlib.suppress(MemcgctlError):
                journal.write_cursor(boot_id, last)
    host_kills = env.proc.vmstat().get("oom_kill", 0)
    since: float | None = None
    if totals is not None and not recorder.warned:
        with contextlib.suppress(MemcgctlError):
            totals = journal.totals(boot_id, boot_time)  # with what was just appended
            # kills whose report the kernel rate-limited: find their cgroups, unless
            # neither the journal nor the kernel's kill count moved since the last try
            attempt = [totals["records"], host_kills]
            if totals["unattributed"] and totals.get("attempt") != attempt:
                totals = journal.attribute(_local_kills(env), attempt)
        since = float(totals["created"])
        causes = {cg: tot.subtree(totals, cg) for cg in cgs}
    else:
        # the state directory cannot be written: recount what the log and journal hold
        kills = [
            ev
            for ev in merge_history(kernel, journal.read())
            if ev.get("kind") in ("oom_kill", "user_kill") and str(ev.get("time", "")) >= boot_iso
        ]
        causes = {cg: by_cause(cg, kills) for cg in cgs}
    local, hier = _kernel_counters(env, cgs)
    doc: dict[str, Any] = {
        "system": {"oom_kill": host_kills},
        "counting_since": since,
        "cgroups": [entry(cg, local.get(cg), hier.get(cg), causes[cg]) for cg in cgs],
    }
    if fmt == "prometheus":
        sys.stdout.write(prometheus(doc))
        sys.stdout.flush()
        return
    if out.json or fmt == "json":
        emit_json(doc)
        return

    click.echo(f"host oom_kill (/proc/vmstat): {doc['system']['oom_kill']}")
    draw_table(out, COUNTER_FIELDS, doc["cgroups"], fit=False)
