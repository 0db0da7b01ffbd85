"""``explain-kill``: why the kernel killed what it killed, rebuilt from its OOM report."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from memcgctl.commands.common import AsciiInt, output_options, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.render.output import Output, print_tree, say
from memcgctl.vocab.errors import MemcgctlError, OperationFailed, UsageProblem, Vanished

if TYPE_CHECKING:
    from memcgctl.logic.oomreport import OomReport
    from memcgctl.logic.oomtable import TaskRow
    from memcgctl.logic.postmortem import KillExplanation
    from memcgctl.logic.reportsnapshot import BadnessMap, CgroupLookup, LiveInfo, LiveLookup
    from memcgctl.vocab.cgpath import CgroupPath


def _live_report(env: Env, pid: int | None) -> OomReport | None:
    """The report of the kill of ``pid`` (default: the last kill) in the live kernel
    log: every record, since task-table rows carry no OOM keyword."""
    from memcgctl.kernel.kmsgdev import KmsgReader
    from memcgctl.logic.oomassembler import OomAssembler, kmsg_events

    reader = KmsgReader(env.kmsg).open()
    try:
        raws = reader.read_available()
    finally:
        reader.close()
    asm = OomAssembler(env.proc.boot_time(), source=env.kmsg, reports=True, pid=pid)
    for _ev in kmsg_events(asm, raws, every_record=True):
        pass  # the reader keeps the report of the kill asked for
    return asm.chosen


def _live_lookups(env: Env, gone: list[TaskRow] | None = None) -> tuple[LiveLookup, CgroupLookup]:
    """Badness of the report's processes and cgroups that still exist on this machine
    (and a cgroup's pod label, read beside its badness); the rows of processes gone
    since (their registry entries are pruned with them) are appended to ``gone``."""
    from memcgctl.logic.reportsnapshot import LiveInfo
    from memcgctl.state.store import BADNESS, pod_beside, read_setting

    registry: dict[tuple[int, int], int] | None = None

    def process(row: TaskRow) -> LiveInfo | None:
        nonlocal registry
        try:
            if not env.proc.exists(row.pid) or env.proc.comm(row.pid) != row.name:
                if gone is not None:
                    gone.append(row)
                return None  # gone, or the pid was recycled
            cg = env.cgroup_of_pid(row.pid)
            if registry is None:
                registry = env.registry.load()
            entry = registry.get((row.pid, env.proc.start_time(row.pid)))
        except (MemcgctlError, Vanished, OSError):
            return None
        if entry is not None:
            return LiveInfo(cg, entry, "process")
        return LiveInfo(cg, None)

    def cgroup(path: CgroupPath) -> LiveInfo | None:
        try:
            cg = env.fs.resolve(path)
            setting = read_setting(env.fs, cg, BADNESS)
            pod = pod_beside(env.fs, cg, setting)
        except (MemcgctlError, Vanished, OSError):
            return None
        if setting.value is None:
            return None
        return LiveInfo(path, setting.value, setting.source, pod)

    return process, cgroup


def _with_gone_note(x: KillExplanation, gone: list[TaskRow]) -> KillExplanation:
    """Say which processes' badness is no longer known (a process badness lives in the
    registry only as long as the process: a dead victim's entry is pruned), so the
    counterfactual's "the same task" is not taken for more than it is."""
    from memcgctl.vocab import structs
    from memcgctl.vocab.reportnotes import Said, note

    gone_note = note(Said.GONE, tasks=tuple((r.pid, r.name) for r in gone))
    return structs.replace(x, priority_notes=(*x.priority_notes, gone_note))


def _badness_map(path: str | None) -> BadnessMap:
    from memcgctl.logic.reportsnapshot import BadnessMap

    if path is None:
        return BadnessMap()
    from memcgctl.inputs.logfile import read_chunks

    data = b"".join(read_chunks(path))
    return BadnessMap.parse(data.decode("utf-8", "replace"), path)


@click.command("explain-kill", epilog=epilog("explain-kill"))
@click.argument("pid", required=False, type=AsciiInt(minimum=1))
@click.option(
    "--from",
    "from_file",
    metavar="FILE",
    help="A saved kernel log (- for standard input) instead of this machine's.",
)
@click.option(
    "--badness",
    "badness_file",
    metavar="FILE",
    help="Badness for the counterfactual: 'PATTERN BADNESS' lines; /cgroup/path "
    "(wildcards allowed) or a process-name pattern.",
)
@click.option(
    "--top",
    type=AsciiInt(minimum=1),
    default=10,
    show_default=True,
    metavar="N",
    help="Candidates shown.",
)
@output_options
@pass_env
def explain_kill(
    env: Env,
    pid: int | None,
    from_file: str | None,
    badness_file: str | None,
    top: int,
    out: Output,
) -> None:
    """Why the kernel killed PID (default: the last OOM kill in the log).

    Rebuilds the kernel's ranking from the OOM report's task table (points = rss +
    swap + page tables + oom_score_adj × totalpages/1000, under the rules of the kernel
    that wrote it), says whether its victim is the top and, if not, why (oom.group,
    sacrifice child, exiting victim, incomplete table), then what the priority policy
    would have killed with the badness known (live for what still exists, or
    --badness FILE).  Exit status 1 when the log holds no such kill.
    """
    from memcgctl.logic.postmortem import explain_report
    from memcgctl.render.explain import (
        explain_tree,
        footer_lines,
        kill_explanation_json,
        kill_summary_lines,
        priority_lines,
    )

    badness = _badness_map(badness_file)
    gone: list[TaskRow] = []
    live: LiveLookup | None = None
    live_cg: CgroupLookup | None = None
    if from_file is not None:
        from memcgctl.inputs.logfile import read_log_lines
        from memcgctl.logic.oomassembler import collect

        report, _ = collect(read_log_lines(from_file), pid, from_file)
        where = from_file
    else:
        try:
            report = _live_report(env, pid)
        except UsageProblem:
            raise
        live, live_cg = _live_lookups(env, gone)
        where = env.kmsg
    if report is None:
        what = f"no OOM kill of pid {pid}" if pid is not None else "no OOM kill"
        raise OperationFailed(f"{where}: {what} in the log")
    x = explain_report(report, badness, live, live_cg)
    if gone:
        x = _with_gone_note(x, gone)
    if out.json:
        from memcgctl.render.jsonstream import emit_json_stream

        # the candidates written one by one: a table of 100,000 tasks is never one text
        emit_json_stream(kill_explanation_json(x, lazy=True))
        return
    for line in kill_summary_lines(x):
        say(line)
    if x.decision.candidates:
        say("")
        print_tree(out, explain_tree(x.decision, x.snapshot, per_level=top))
        for line in footer_lines(x.decision):
            say(line)
    say("")
    for line in priority_lines(x):
        say(line)
