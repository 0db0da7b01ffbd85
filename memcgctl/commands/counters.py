"""``counters``: OOM kill counters per cgroup, as a table, JSON, or the Prometheus text
exposition format."""

from __future__ import annotations

import sys

import click

from memcgctl.commands.common import CgroupName, output_options, pass_env, pids_option
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.render.output import Output, draw_table, emit_json
from memcgctl.vocab.errors import UsageProblem


@click.command(epilog=epilog("counters"))
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
    from memcgctl.logic.counters import prometheus
    from memcgctl.watch.tally import counters_document

    if fmt == "prometheus" and (out.json or out.plain):
        raise UsageProblem(
            "--format prometheus prints the exposition format: not with --json or --plain"
        )
    if fmt == "json" and out.plain:
        raise UsageProblem("--format json and --plain: give one of them")
    fs = env.fs
    cgs = [fs.resolve(c) for c in cgroups] + [env.cgroup_of_pid(p) for p in pids]
    walked = not cgroups and not pids
    if walked:
        cgs = list(fs.walk())
    cgs = list(dict.fromkeys(cgs))
    doc = counters_document(env, cgs, walked)
    if fmt == "prometheus":
        sys.stdout.write(prometheus(doc))
        sys.stdout.flush()
        return
    if out.json or fmt == "json":
        emit_json(doc)
        return

    from memcgctl.render.views import COUNTER_FIELDS  # the table only

    click.echo(f"host oom_kill (/proc/vmstat): {doc['system']['oom_kill']}")
    draw_table(out, COUNTER_FIELDS, doc["cgroups"], fit=False)
