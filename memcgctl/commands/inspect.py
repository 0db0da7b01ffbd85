"""``tree`` and ``ps``: the memcg hierarchy and the processes in it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from memcgctl.cgpath import CgroupPath
from memcgctl.commands.common import CgroupName, pass_env, pid_option
from memcgctl.env import Env
from memcgctl.model import CgroupInfo, ProcessInfo, Snapshot
from memcgctl.render import Column, Output, emit_json, output_options, print_columns
from memcgctl.units import format_bytes, format_duration_ms, format_kb

F = TypeVar("F", bound=Callable[..., Any])


def _yesno(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def _badness_cell(value: int, source: str) -> str:
    return str(value) if source == "default" else f"{value} ({source})"


def _badness_short(value: int, source: str) -> str:
    """The narrow-terminal form: the source's initial (``900t`` trusted, ``800u`` user,
    ``800p`` process, ``1000o`` oom_score_adj)."""
    return str(value) if source == "default" else f"{value}{source[0]}"


def _badness_column(rows: list[tuple[int, str]]) -> Column:
    """BADNESS with its source, narrowed to ``BAD`` / ``900t`` on a small terminal."""
    return Column(
        "BADNESS",
        [_badness_cell(value, source) for value, source in rows],
        priority=1,
        short="BAD",
        short_cells=[_badness_short(value, source) for value, source in rows],
    )


def wide_option(func: F) -> F:
    return click.option(
        "--wide",
        "-w",
        is_flag=True,
        help="Every column, however wide the terminal (the default when piped).",
    )(func)


def tree_rows(snap: Snapshot, root: CgroupPath) -> list[tuple[str, CgroupInfo]]:
    """(display name with tree guides, cgroup) in pre-order."""
    rows: list[tuple[str, CgroupInfo]] = []

    def visit(path: CgroupPath, guides: str, last: bool, top: bool) -> None:
        cg = snap.cgroups[path]
        name = path if top else path.name
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
@wide_option
@output_options
@pass_env
def tree(env: Env, cgroup: str | None, pid: int | None, wide: bool, out: Output) -> None:
    """Show the memcg hierarchy below CGROUP (default: /).

    Columns: usage, limit, badness (and where it comes from), OOM delay, oom.group,
    under OOM, OOM kills of the cgroup itself (kernel counter), tasks attached.  On a
    narrow terminal the headers and badness sources are abbreviated (900t: trusted,
    800u: user) and the least useful columns left out; names and numbers are never cut.
    """
    out = out._replace(wide=wide)
    root = env.target_cgroup(cgroup, pid)
    _require_memory(env, root)
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
    rows = tree_rows(snap, root)
    cgs = [cg for _, cg in rows]
    print_columns(
        out,
        [
            Column("CGROUP", [label for label, _ in rows]),
            Column("USAGE", [format_bytes(cg.usage_bytes) for cg in cgs], right=True),
            Column(
                "LIMIT",
                ["max" if cg.limit_bytes is None else format_bytes(cg.limit_bytes) for cg in cgs],
                right=True,
            ),
            _badness_column([(cg.badness, cg.badness_source) for cg in cgs]),
            Column("DELAY", [format_duration_ms(cg.oom_delay_ms) for cg in cgs], priority=4),
            Column("OOM.GROUP", [_yesno(cg.oom_group) for cg in cgs], priority=5, short="GRP"),
            Column("UNDER_OOM", [_yesno(cg.under_oom) for cg in cgs], priority=2, short="OOM"),
            Column(
                "KILLS",
                ["-" if cg.oom_kills_local is None else str(cg.oom_kills_local) for cg in cgs],
                right=True,
                priority=3,
            ),
            Column("TASKS", [str(cg.nr_tasks) for cg in cgs], right=True, priority=1),
        ],
    )


def _require_memory(env: Env, cg: CgroupPath) -> None:
    """A cgroup2 mount (or cgroup) without the memory controller has no usage or limit
    to show: say so rather than print ``max`` everywhere."""
    from memcgctl.errors import NotSupported

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


@click.command()
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
    print_columns(
        out,
        [
            Column("PID", [str(p.pid) for p in procs], right=True),
            Column("COMM", [p.comm for p in procs], priority=2),
            Column("RSS", [format_kb(p.rss_kb) for p in procs], right=True),
            Column("SWAP", [format_kb(p.swap_kb) for p in procs], right=True, priority=3),
            _badness_column([(p.badness, p.badness_source) for p in procs]),
            Column(
                "OOM_ADJ",
                [str(p.oom_score_adj) for p in procs],
                right=True,
                priority=4,
                short="ADJ",
            ),
            Column(
                "OOM_SCORE",
                ["-" if p.oom_score is None else str(p.oom_score) for p in procs],
                right=True,
                priority=3,
                short="SCORE",
            ),
            Column("CGROUP", [p.cgroup for p in procs]),
        ],
    )
