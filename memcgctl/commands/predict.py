"""``predict-victim``: who dies now if a cgroup (or the host) runs out of memory."""

from __future__ import annotations

import click

from memcgctl.commands.common import (
    AsciiInt,
    CgroupName,
    output_options,
    pass_env,
    pid_option,
    unit_option,
)
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.logic.decision import KERNEL, POLICIES, PRIORITY, Decision
from memcgctl.logic.kernelheuristic import select_kernel
from memcgctl.logic.priority import rank_priority, select_priority
from memcgctl.render.diag import diagnostic
from memcgctl.render.documents import predict_json
from memcgctl.render.explain import explain_tree, footer_lines, summary_lines
from memcgctl.render.output import Output, draw_table, emit_json, print_tree, say
from memcgctl.render.views import RunnerUp, runner_up_fields
from memcgctl.snapshot import kernel_params


def _runners_up(d: Decision, ranked: list[Decision], top: int) -> list[RunnerUp]:
    if d.policy == KERNEL:
        return [RunnerUp(i, s.process, s.points) for i, s in enumerate(d.candidates[:top], 1)]
    return [
        RunnerUp(i, r.victim, r.victim.badness, len(r.group_pids))
        for i, r in enumerate(ranked, 1)
        if r.victim is not None
    ]


@click.command("predict-victim", epilog=epilog("predict-victim"))
@click.argument("cgroup", required=False, type=CgroupName())
@pid_option("Use the memory cgroup of PID as the OOM root.")
@unit_option("Use the cgroup of systemd unit NAME as the OOM root.")
@click.option(
    "--policy",
    type=click.Choice(POLICIES),
    default=PRIORITY,
    show_default=True,
    help="priority: memcgctl's strict priorities; kernel: the stock kernel heuristic.",
)
@click.option("--explain", is_flag=True, help="Show the walk level by level, as a tree.")
@click.option(
    "--top",
    type=AsciiInt(minimum=1),
    default=None,
    metavar="N",
    help="Also show the N first in line (runners-up); with --explain, N candidates per level.",
)
@output_options
@pass_env
def predict_victim(
    env: Env,
    cgroup: str | None,
    pid: int | None,
    unit: str | None,
    policy: str,
    explain: bool,
    top: int | None,
    out: Output,
) -> None:
    """Predict who dies now if CGROUP (default: the whole host) runs out of memory.

    CGROUP is the OOM root: "/" is a host-wide OOM; any other memcg is that memcg
    hitting its limit.  Read-only.  Exit status 1 when nothing is killable.
    """
    root = env.target_cgroup(cgroup, pid, unit=unit)
    # the priority walk reads only the processes it looks at (issue 22)
    snap = env.snapshot(root, lazy=policy != KERNEL)
    ranked: list[Decision] = []
    if policy == KERNEL:
        decision = select_kernel(snap, root, kernel_params(env.proc, snap))
    else:
        decision = select_priority(snap, root)
        if top is not None and decision.victim is not None:
            ranked = rank_priority(snap, root, top)
    if out.json:
        emit_json(predict_json(decision, snap, top, ranked))
    else:
        if explain:
            print_tree(out, explain_tree(decision, snap, per_level=top or 5))
            click.echo("")
        if decision.victim is not None:
            for line in summary_lines(decision, snap):
                say(line)
        if top is not None and decision.victim is not None:
            click.echo("")
            draw_table(
                out,
                runner_up_fields(policy == KERNEL),
                _runners_up(decision, ranked, top),
                title="next in line" if policy == PRIORITY else "ranked by the kernel",
                fit=False,
            )
        if explain:
            for line in footer_lines(decision):
                say(line)
    if decision.victim is None:
        # found nothing: exit 1 with one line on stderr, not a copy on stdout too
        if not out.json:
            diagnostic(summary_lines(decision)[0])
        raise click.exceptions.Exit(1)
