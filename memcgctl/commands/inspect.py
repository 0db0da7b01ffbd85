"""``tree`` and ``ps``: the memcg hierarchy and the processes in it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from memcgctl.commands.common import CgroupName, output_options, pass_env, pid_option
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.render.envelope import hierarchy_json
from memcgctl.render.output import Output, draw_table, emit_json
from memcgctl.render.views import CGROUP_FIELDS, PROCESS_FIELDS, tree_rows
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.model import ProcessInfo

F = TypeVar("F", bound=Callable[..., Any])


def wide_option(func: F) -> F:
    return click.option(
        "--wide",
        "-w",
        is_flag=True,
        help="Every column, however wide the terminal (the default when piped).",
    )(func)


@click.command(epilog=epilog("tree"))
@click.argument("cgroup", required=False, type=CgroupName())
@pid_option()
@click.option(
    "--processes",
    "-p",
    is_flag=True,
    help="Show each cgroup's processes too (PID COMM, rss as USAGE), as systemd-cgls.",
)
@wide_option
@output_options
@pass_env
def tree(
    env: Env, cgroup: str | None, pid: int | None, processes: bool, wide: bool, out: Output
) -> None:
    """Show the memcg hierarchy below CGROUP (default: /).

    Columns: usage, limit, badness (and where it comes from), OOM delay, oom.group,
    under OOM, OOM kills of the cgroup itself (kernel counter), tasks attached.  On a
    narrow terminal the headers and badness sources are abbreviated (900t: trusted,
    800u: user) and the least useful columns left out; a long cgroup name is shortened
    in the middle (…) rather than lose BADNESS; numbers are never cut.
    """
    out = out._replace(wide=wide)
    root = env.target_cgroup(cgroup, pid)
    _require_memory(env, root)
    snap = env.snapshot(root, with_processes=processes)
    if out.json:
        doc: dict[str, Any] = {
            "hierarchy": hierarchy_json(env.fs.mount, env.fs.version),
            "root": root,
            "cgroups": [cg.to_json() for cg in snap.walk(root)],
        }
        if processes:
            doc["processes"] = [p.to_json() for p in snap.subtree_processes(root)]
        emit_json(doc)
        return
    draw_table(out, CGROUP_FIELDS, tree_rows(snap, root, processes))


def _require_memory(env: Env, cg: CgroupPath) -> None:
    """A cgroup2 mount (or cgroup) without the memory controller has no usage or limit
    to show: say so rather than print ``max`` everywhere."""
    from memcgctl.vocab.errors import NotSupported

    if not env.hierarchy.has_memory:
        raise NotSupported(
            f"{env.fs.mount}: this cgroup2 mount has no memory controller "
            "(give the memory hierarchy with --cgroup-root)"
        )
    if env.fs.version == 2 and not cg.is_root and not env.fs.has_file(cg, "memory.current"):
        raise NotSupported(
            f"{cg}: the memory controller is not enabled here "
            "(see cgroup.subtree_control of its parent)"
        )


_SORT_KEYS = {
    "pid": lambda p: (p.pid,),
    "rss": lambda p: (-p.rss_kb, p.pid),
    "badness": lambda p: (p.badness, -p.rss_kb, p.pid),
    "oom_score": lambda p: (-(p.oom_score or 0), p.pid),
}


@click.command(epilog=epilog("ps"))
@click.argument("cgroup", required=False, type=CgroupName())
@pid_option()
@click.option(
    "--sort", "sort_key", type=click.Choice(sorted(_SORT_KEYS)), default="pid", show_default=True
)
@click.option("--all", "show_all", is_flag=True, help="Include kernel threads and zombies.")
@wide_option
@output_options
@pass_env
def ps(
    env: Env,
    cgroup: str | None,
    pid: int | None,
    sort_key: str,
    show_all: bool,
    wide: bool,
    out: Output,
) -> None:
    """List processes in CGROUP's subtree (default: the whole host).

    BADNESS shows where it comes from: process (set with set-badness --pid),
    oom_score_adj (-1000 counts as 1000), or the default 500.  CGROUP comes last and is
    never cut (like ps's COMMAND); on a narrow terminal the least useful columns go.
    """
    out = out._replace(wide=wide)
    root = env.target_cgroup(cgroup, pid)
    snap = env.snapshot(root, with_oom_score=True)
    procs: list[ProcessInfo] = [
        p for p in snap.subtree_processes(root) if show_all or p.killable or p.pid == 1
    ]
    procs.sort(key=_SORT_KEYS[sort_key])
    if out.json:
        emit_json({"root": root, "processes": [p.to_json() for p in procs]})
        return
    draw_table(out, PROCESS_FIELDS, procs)
