"""The field list of each object memcgctl draws as a table (below's views are the model):
one :class:`~memcgctl.render.output.Field` per column — header, formatter, narrow-terminal hints —
so every command draws an object the same way, through one table function
(:func:`~memcgctl.render.output.draw_table`, or :func:`~memcgctl.render.output.print_aligned` for
the one-shot commands that must not import a table library).

Commands build the data and pick the field list; nothing here reads a file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from memcgctl.render.output import Field, with_guides
from memcgctl.render.safetext import printable
from memcgctl.vocab.constants import BADNESS_DEFAULT
from memcgctl.vocab.units import format_bytes, format_duration_ms, format_kb

# (types only: get-badness and get-delay import this module and must not load the
# snapshot dataclasses: they must start fast)
if TYPE_CHECKING:
    from memcgctl.state.store import Setting
    from memcgctl.vocab.cgpath import CgroupPath
    from memcgctl.vocab.model import CgroupInfo, ProcessInfo, Snapshot


def yesno(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def badness_cell(value: int, source: str) -> str:
    return str(value) if source == "default" else f"{value} ({source})"


def badness_source_text(source: str, origin: int | str | None) -> str:
    """Where a badness came from, in words: ``process`` (its own entry), ``inherited
    from 1234``, ``rule batch-workers``, ``oom_score_adj``, ``trusted``, ``default``."""
    if origin is None:
        return source
    return f"inherited from {origin}" if source == "inherited" else f"{source} {origin}"


def cgroup_badness_cell(cg: CgroupInfo) -> str:
    """``123 (rule nightly-jobs)`` for a value a rule wrote, else as badness_cell."""
    if cg.badness_rule is not None:
        return f"{cg.badness} (rule {printable(cg.badness_rule)})"
    return badness_cell(cg.badness, cg.badness_source)


def process_badness_cell(p: ProcessInfo) -> str:
    """A process's badness and where it came from: ``900 (inherited from 1234)``."""
    if p.badness_source == "default":
        return str(p.badness)
    return f"{p.badness} ({badness_source_text(p.badness_source, p.badness_from)})"


def badness_short(value: int, source: str) -> str:
    """The narrow-terminal form: the source's initial (``900t`` trusted, ``800u`` user,
    ``800p`` process, ``900i`` inherited, ``20r`` rule, ``1000o`` oom_score_adj)."""
    return str(value) if source == "default" else f"{value}{source[0]}"


# -- tree: one row per cgroup, the name drawn with tree guides --------------------------


class TreeRow(NamedTuple):
    label: str  # the cgroup's name (or a process's pid and comm) with its tree guides
    cgroup: CgroupInfo
    process: ProcessInfo | None = None  # ``tree -p``: a process row, in ``cgroup``


def tree_rows(snap: Snapshot, root: CgroupPath, processes: bool = False) -> list[TreeRow]:
    """The cgroups below ``root`` in pre-order, the root by its path, the others by
    their name after the guides; with ``processes`` (``tree -p``, as ``systemd-cgls``)
    each cgroup's own processes first, as ``PID COMM`` leaves."""
    Node = tuple["CgroupInfo", "ProcessInfo | None"]

    def kids(node: Node) -> list[Node]:
        cg, proc = node
        if proc is not None:
            return []
        procs: list[Node] = (
            [(cg, p) for p in sorted(snap.processes_in(cg.path), key=lambda p: p.pid)]
            if processes
            else []
        )
        return procs + [(snap.cgroups[k], None) for k in cg.children if k in snap.cgroups]

    rows = []
    top: Node = (snap.cgroups[root], None)
    for guides, (cg, proc) in with_guides(top, kids):
        if proc is not None:
            rows.append(TreeRow(f"{guides}{proc.pid} {proc.comm}", cg, proc))
        else:
            rows.append(TreeRow(cg.path if not guides else guides + cg.path.name, cg))
    return rows


def _cg(cell: Callable[[CgroupInfo], str]) -> Callable[[TreeRow], str]:
    """A cgroup column's cell; blank on a process row."""
    return lambda r: "" if r.process is not None else cell(r.cgroup)


def _tree_badness(r: TreeRow, short: bool) -> str:
    value, source = (
        (r.process.badness, r.process.badness_source)
        if r.process is not None
        else (r.cgroup.badness, r.cgroup.badness_source)
    )
    if short:
        return badness_short(value, source)
    if r.process is not None:
        return process_badness_cell(r.process)
    return cgroup_badness_cell(r.cgroup)


# a cgroup name is shortened ("…") to no fewer characters than this to keep BADNESS
NAME_MIN = 24

CGROUP_FIELDS: tuple[Field[TreeRow], ...] = (
    Field("CGROUP", lambda r: r.label, elide=NAME_MIN),
    Field(
        "USAGE",
        lambda r: (
            format_kb(r.process.rss_kb)
            if r.process is not None
            else format_bytes(r.cgroup.usage_bytes)
        ),
        right=True,
    ),
    Field(
        "LIMIT",
        _cg(lambda c: "max" if c.limit_bytes is None else format_bytes(c.limit_bytes)),
        right=True,
    ),
    Field(
        "BADNESS",
        lambda r: _tree_badness(r, False),
        priority=1,
        short="BAD",
        short_cell=lambda r: _tree_badness(r, True),
    ),
    Field("DELAY", _cg(lambda c: format_duration_ms(c.oom_delay_ms)), priority=4),
    Field("OOM.GROUP", _cg(lambda c: yesno(c.oom_group)), priority=5, short="GRP"),
    Field("UNDER_OOM", _cg(lambda c: yesno(c.under_oom)), priority=2, short="OOM"),
    Field(
        "KILLS",
        _cg(lambda c: "-" if c.oom_kills_local is None else str(c.oom_kills_local)),
        right=True,
        priority=3,
    ),
    Field("TASKS", _cg(lambda c: str(c.nr_tasks)), right=True, priority=1),
)

# -- ps: one row per process -----------------------------------------------------------

PROCESS_FIELDS: tuple[Field[ProcessInfo], ...] = (
    Field("PID", lambda p: str(p.pid), right=True),
    Field("COMM", lambda p: p.comm, priority=2),
    Field("RSS", lambda p: format_kb(p.rss_kb), right=True),
    Field("SWAP", lambda p: format_kb(p.swap_kb), right=True, priority=3),
    Field(
        "BADNESS",
        process_badness_cell,
        priority=1,
        short="BAD",
        short_cell=lambda p: badness_short(p.badness, p.badness_source),
    ),
    Field("OOM_ADJ", lambda p: str(p.oom_score_adj), right=True, priority=4, short="ADJ"),
    Field(
        "OOM_SCORE",
        lambda p: "-" if p.oom_score is None else str(p.oom_score),
        right=True,
        priority=3,
        short="SCORE",
    ),
    Field("CGROUP", lambda p: p.cgroup),
)

# -- get-badness / get-delay: their JSON entries ------------------------------------------


def source_text(entry: Mapping[str, Any]) -> str:
    """``badness_source`` with its ``badness_from``: ``inherited from 1234``, ``rule NAME``."""
    return badness_source_text(str(entry["badness_source"]), entry.get("badness_from"))


def _target(entry: Mapping[str, Any]) -> str:
    return str(entry["cgroup"]) if "cgroup" in entry else f"pid {entry['pid']} ({entry['comm']})"


BADNESS_FIELDS: tuple[Field[Mapping[str, Any]], ...] = (
    Field("TARGET", _target),
    Field("BADNESS", lambda e: str(e["badness"])),
    Field("SOURCE", lambda e: source_text(e)),
)

DELAY_FIELDS: tuple[Field[Mapping[str, Any]], ...] = (
    Field("CGROUP", lambda e: str(e["cgroup"])),
    Field("DELAY", lambda e: format_duration_ms(e["oom_delay_ms"])),
    Field("SOURCE", lambda e: str(e["oom_delay_source"])),
)

# -- set-badness / set-delay: the one line that says what changed --------------------------


def badness_setting(s: Setting) -> str:
    return f"{BADNESS_DEFAULT} (default)" if s.value is None else f"{s.value} ({s.source})"


def delay_setting(s: Setting) -> str:
    return "off" if s.value is None else f"{format_duration_ms(s.value)} ({s.source})"


def change_line(what: str, setting: str, dry_run: bool, before: str, after: str) -> str:
    """``/a: set badness 100 (trusted), was 500 (default)`` (``would set`` on a dry run)."""
    verb = "would set" if dry_run else "set"
    return f"{what}: {verb} {setting} {after}, was {before}"


# -- predict-victim --top: the next in line ---------------------------------------------


class RunnerUp(NamedTuple):
    rank: int
    process: ProcessInfo
    value: int  # kernel: points; priority: badness
    group_size: int = 1  # pids that die with it (memory.oom.group)


def runner_up_fields(kernel: bool) -> tuple[Field[RunnerUp], ...]:
    def rss(r: RunnerUp) -> str:
        extra = f" +{r.group_size - 1} (oom.group)" if r.group_size > 1 else ""
        return format_kb(r.process.rss_kb) + extra

    return (
        Field("#", lambda r: str(r.rank), right=True),
        Field("PID", lambda r: str(r.process.pid), right=True),
        Field("COMM", lambda r: r.process.comm),
        Field("CGROUP", lambda r: r.process.cgroup),
        Field("POINTS" if kernel else "BADNESS", lambda r: str(r.value), right=True),
        Field("OOM_ADJ", lambda r: str(r.process.oom_score_adj), right=True),
        Field("RSS", rss, right=True),
    )


# -- counters: one row per cgroup of its JSON document -------------------------------------


def _oom_kill(header: str, key: str) -> Field[Mapping[str, Any]]:
    """The ``oom_kill`` count of the ``key`` counters, ``-`` where the kernel has none."""

    def cell(entry: Mapping[str, Any]) -> str:
        values = entry[key]
        return "-" if not values or "oom_kill" not in values else str(values["oom_kill"])

    return Field(header, cell, right=True)


COUNTER_FIELDS: tuple[Field[Mapping[str, Any]], ...] = (
    Field("CGROUP", lambda c: str(c["cgroup"])),
    _oom_kill("LOCAL", "local"),
    _oom_kill("HIER", "hierarchical"),
    Field("SYSTEM", lambda c: str(c["by_cause"]["system"]), right=True),
    Field("MEMCG", lambda c: str(c["by_cause"]["memcg"]), right=True),
    Field("USER", lambda c: str(c["by_cause"]["user"]), right=True),
    Field("COMPLETE", lambda c: "yes" if c["complete"] else "no"),
)
