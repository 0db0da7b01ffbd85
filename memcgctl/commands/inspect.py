"""``tree`` and ``ps``: the memcg hierarchy and the processes in it."""

from __future__ import annotations

import click

from memcgctl.commands.common import CgroupName, pass_env, pid_option
from memcgctl.env import Env
from memcgctl.model import CgroupInfo, ProcessInfo, Snapshot
from memcgctl.render import Output, emit_json, output_options, print_table
from memcgctl.units import format_bytes, format_duration_ms, format_kb


def _yesno(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def _badness_cell(value: int, source: str) -> str:
    return str(value) if source == "default" else f"{value} ({source})"


def tree_rows(snap: Snapshot, root: str) -> list[tuple[str, CgroupInfo]]:
    """(display name with tree guides, cgroup) in pre-order."""
    rows: list[tuple[str, CgroupInfo]] = []

    def visit(path: str, guides: str, last: bool, top: bool) -> None:
        cg = snap.cgroups[path]
        name = path if top else path.rsplit("/", 1)[1]
        label = name if top else guides + ("└─ " if last else "├─ ") + name
        rows.append((label, cg))
        kids = [k for k in cg.children if k in snap.cgroups]
        child_guides = "" if top else guides + ("   " if last else "│  ")
        for i, kid in enumerate(kids):
            visit(kid, child_guides, i == len(kids) - 1, False)

    visit(root, "", True, True)
    return rows


@click.command()
@click.argument("cgroup", required=False, type=CgroupName())
@pid_option()
@output_options
@pass_env
def tree(env: Env, cgroup: str | None, pid: int | None, out: Output) -> None:
    """Show the memcg hierarchy below CGROUP (default: /).

    Columns: usage, limit, badness (and where it comes from), OOM delay, oom.group,
    under OOM, OOM kills of the cgroup itself (kernel counter), tasks attached.
    """
    root = env.target_cgroup(cgroup, pid)
    snap = env.snapshot(root, with_processes=False)
    if out.json:
        emit_json(
            {
                "hierarchy": {"mount": str(env.fs.mount), "version": env.fs.version},
                "root": root,
                "cgroups": [cg.to_json() for cg in snap.walk(root)],
            }
        )
        return
    rows = []
    for label, cg in tree_rows(snap, root):
        kills = cg.oom_kills_local
        rows.append(
            [
                label,
                format_bytes(cg.usage_bytes),
                "max" if cg.limit_bytes is None else format_bytes(cg.limit_bytes),
                _badness_cell(cg.badness, cg.badness_source),
                format_duration_ms(cg.oom_delay_ms),
                _yesno(cg.oom_group),
                _yesno(cg.under_oom),
                "-" if kills is None else str(kills),
                str(cg.nr_tasks),
            ]
        )
    print_table(
        out,
        [
            "CGROUP",
            "USAGE",
            "LIMIT",
            "BADNESS",
            "DELAY",
            "OOM.GROUP",
            "UNDER_OOM",
            "KILLS",
            "TASKS",
        ],
        rows,
        right_align=(1, 2, 7, 8),
    )


_SORT_KEYS = {
    "pid": lambda p: (p.pid,),
    "rss": lambda p: (-p.rss_kb, p.pid),
    "badness": lambda p: (p.badness, -p.rss_kb, p.pid),
    "oom_score": lambda p: (-(p.oom_score or 0), p.pid),
}


@click.command()
@click.argument("cgroup", required=False, type=CgroupName())
@pid_option()
@click.option(
    "--sort", "sort_key", type=click.Choice(sorted(_SORT_KEYS)), default="pid", show_default=True
)
@click.option("--all", "show_all", is_flag=True, help="Include kernel threads and zombies.")
@output_options
@pass_env
def ps(
    env: Env, cgroup: str | None, pid: int | None, sort_key: str, show_all: bool, out: Output
) -> None:
    """List processes in CGROUP's subtree (default: the whole host).

    BADNESS shows where it comes from: process (set with set-badness --pid),
    oom_score_adj (-1000 counts as 1000), or the default 500.
    """
    root = env.target_cgroup(cgroup, pid)
    snap = env.snapshot(root, with_oom_score=True)
    procs: list[ProcessInfo] = [
        p for p in snap.subtree_processes(root) if show_all or p.killable or p.pid == 1
    ]
    procs.sort(key=_SORT_KEYS[sort_key])
    if out.json:
        emit_json({"root": root, "processes": [p.to_json() for p in procs]})
        return
    print_table(
        out,
        ["PID", "COMM", "CGROUP", "RSS", "SWAP", "BADNESS", "OOM_ADJ", "OOM_SCORE"],
        [
            [
                p.pid,
                p.comm,
                p.cgroup,
                format_kb(p.rss_kb),
                format_kb(p.swap_kb),
                _badness_cell(p.badness, p.badness_source),
                p.oom_score_adj,
                "-" if p.oom_score is None else p.oom_score,
            ]
            for p in procs
        ],
        right_align=(0, 3, 4, 6, 7),
    )
