"""``predict-victim``: who dies now if a cgroup (or the host) runs out of memory."""

from __future__ import annotations

import click

from memcgctl.commands.common import AsciiInt, CgroupName, pass_env, pid_option
from memcgctl.env import Env
from memcgctl.explain import decision_json, explain_tree, footer_lines, summary_lines
from memcgctl.policy import (
    KERNEL,
    POLICIES,
    PRIORITY,
    Decision,
    rank_priority,
    select_kernel,
    select_priority,
)
from memcgctl.render import Output, emit_json, output_options, print_table, print_tree, say
from memcgctl.snapshot import kernel_params
from memcgctl.units import format_kb


def _runners_up_rows(d: Decision, ranked: list[Decision], top: int) -> list[list[object]]:
    if d.policy == KERNEL:
        return [
            [
                i,
                s.process.pid,
                s.process.comm,
                s.process.cgroup,
                s.points,
                s.process.oom_score_adj,
                format_kb(s.process.rss_kb),
            ]
            for i, s in enumerate(d.candidates[:top], 1)
        ]
    rows: list[list[object]] = []
    for i, r in enumerate(ranked, 1):
        assert r.victim is not None
        extra = f" +{len(r.group_pids) - 1} (oom.group)" if len(r.group_pids) > 1 else ""
        rows.append(
            [
                i,
                r.victim.pid,
                r.victim.comm,
                r.victim.cgroup,
                r.victim.badness,
                r.victim.oom_score_adj,
                format_kb(r.victim.rss_kb) + extra,
            ]
        )
    return rows


@click.command("predict-victim")
@click.argument("cgroup", required=False, type=CgroupName())
@pid_option("Use the memory cgroup of PID as the OOM root.")
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
    policy: str,
    explain: bool,
    top: int | None,
    out: Output,
) -> None:
    """Predict who dies now if CGROUP (default: the whole host) runs out of memory.

    CGROUP is the OOM root: "/" is a host-wide OOM; any other memcg is that memcg
    hitting its limit.  Read-only.  Exit status 1 when nothing is killable.
    """
    root = env.target_cgroup(cgroup, pid)
    snap = env.snapshot(root)
    ranked: list[Decision] = []
    if policy == KERNEL:
        decision = select_kernel(snap, root, kernel_params(env.proc, snap))
    else:
        decision = select_priority(snap, root)
        if top is not None and decision.victim is not None:
            ranked = rank_priority(snap, root, top)
    if out.json:
        emit_json(
            decision_json(
                decision, snap, top, ranked if policy == PRIORITY and top is not None else None
            )
        )
    else:
        if explain:
            from memcgctl.store import pod_labels

            walked = [c.cgroup.path for lv in decision.walk for c in lv.candidates if c.cgroup]
            pods = pod_labels(env.fs, walked)
            print_tree(out, explain_tree(decision, per_level=top or 5, pods=pods))
            click.echo("")
        for line in summary_lines(decision):
            say(line)
        if top is not None and decision.victim is not None:
            click.echo("")
            print_table(
                out,
                [
                    "#",
                    "PID",
                    "COMM",
                    "CGROUP",
                    "POINTS" if policy == KERNEL else "BADNESS",
                    "OOM_ADJ",
                    "RSS",
                ],
                _runners_up_rows(decision, ranked, top),
                title="next in line" if policy == PRIORITY else "ranked by the kernel",
                right_align=(0, 1, 4, 5, 6),
            )
        if explain:
            for line in footer_lines(decision):
                say(line)
    if decision.victim is None:
        if not out.json:
            say(f"memcgctl: {root}: no killable victim", err=True)
        raise click.exceptions.Exit(1)
