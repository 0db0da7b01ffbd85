"""``events``: OOM events of a subtree — the history still in the kernel log plus the
journal, live with ``--follow``, or from a saved kernel log with ``--from``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import click

from memcgctl.commands.common import CgroupName, pass_env, pid_option
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.render.diag import diagnostic
from memcgctl.render.output import emit_json_line, say
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import UsageProblem
from memcgctl.vocab.records import Event, KernelEvent
from memcgctl.watch.history import KillRecorder, kernel_history


@click.command(epilog=epilog("events"))
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
    from memcgctl.render.eventline import format_event, worded
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
            emit_json_line(worded(ev))
        else:
            say(format_event(ev))

    recorder = KillRecorder(env)
    reader, follower, kernel = kernel_history(env, recorder, root)
    if follow:
        # from here on, kills appended by the daemon and kill-all are printed live
        follower.tail_journal(recorder.journal)
    if not follow or since_iso is not None:
        shown = _history(kernel, follower.invoked_by_kill, recorder, root, since_iso)
        if as_json and not follow:
            from memcgctl.render.jsonstream import emit_json_stream

            # written item by item: the document's text is never whole in memory
            stream = (worded(e) for e in shown)
            emit_json_stream({"root": root, "since": since_iso, "events": stream})
        else:
            count = 0
            for ev in shown:
                count += 1
                show(ev)
            if not follow and not count and not (as_json or json_lines):
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


def _journal_records(recorder: KillRecorder, root: CgroupPath) -> Iterable[Event]:
    """The journal's records that may concern ``root``: for a subtree, only the lines that
    name it or a kernel kill already in hand are parsed (the cost does not grow with the
    journal's other records); for the host, all of them, one at a time."""
    if not root.is_root:
        from memcgctl.state.journalread import read_matching

        found = read_matching(recorder.journal, str(root))
        if found is not None:
            return found
    return recorder.journal.iter_read()


def _history(
    kernel: list[KernelEvent],
    invoked: dict[str, str],
    recorder: KillRecorder,
    root: CgroupPath,
    since_iso: str | None,
) -> Iterator[Event]:
    from memcgctl.watch.history import history_in_order

    return history_in_order(kernel, invoked, _journal_records(recorder, root), root, since_iso)


def _events_from_file(
    path: str,
    cgroup: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
    json_lines: bool,
) -> None:
    """One JSON document with --json (the events in a named array, as for the live
    history), one object per line with --json-lines; both stream (a 100 MB log, or
    100,000 reports, in constant memory)."""
    from memcgctl.inputs.logfile import read_log_lines
    from memcgctl.logic.events import matches
    from memcgctl.logic.oomassembler import saved_events
    from memcgctl.logic.oomreport import LogBound, within
    from memcgctl.render.eventline import format_event, worded

    try:  # matched against the log's own paths: not resolved in this hierarchy
        root = CgroupPath(cgroup or "/")
    except ValueError as exc:
        raise UsageProblem(str(exc)) from None
    lo = LogBound(since) if since is not None else None
    hi = LogBound(until) if until is not None else None
    shown = (
        ev
        for ev in saved_events(read_log_lines(path), path)
        if matches(ev, root, None) and within(ev, lo, hi)
    )
    if as_json:
        from itertools import chain

        from memcgctl.render.jsonstream import emit_json_stream

        # the first event is read before anything is written, so that a file that
        # cannot be opened is one error line, not half a document
        first = next(shown, None)
        events = (worded(ev) for ev in chain([] if first is None else [first], shown))
        head = {"root": root, "from": path, "since": since, "until": until}
        emit_json_stream({**head, "events": events}, live=True)  # each event as it is read
        return
    count = 0
    for ev in shown:
        count += 1
        if json_lines:
            emit_json_line(worded(ev))
        else:
            say(format_event(ev))
    if not json_lines and not count:
        say(f"no OOM events for {root} in {path}", err=True)
