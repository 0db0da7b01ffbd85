"""``memcgctl top``'s screen, drawn from a :class:`~memcgctl.watch.topdata.Frame`: the
same lines on a terminal (inside rich's Live) and in batch mode (``--iterations``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from memcgctl.render.safetext import printable
from memcgctl.render.views import badness_short
from memcgctl.vocab.units import format_bytes, format_duration_ms

if TYPE_CHECKING:
    from memcgctl.vocab.topframe import Frame, Row

BAR = 12
KEYS = "keys: s sort · p policy · q quit"


def bar(usage: int | None, limit: int | None, valve: int | None, width: int = BAR) -> str:
    """``[#####··|···]``: usage against the limit, ``|`` where the daemon's valve is."""
    if not usage or not limit:
        return " " * (width + 2)
    cells = ["#" if i < round(width * min(usage / limit, 1.0)) else "·" for i in range(width)]
    if valve is not None and 0 < valve < limit:
        cells[min(int(width * valve / limit), width - 1)] = "|"
    return "[" + "".join(cells) + "]"


def oom_state(r: Row) -> str:
    ep = r.episode
    if isinstance(ep, dict):
        if ep.get("rounds"):
            return f"OOM, {ep['rounds']} kill(s)"
        return f"OOM, kill in {format_duration_ms(int(ep.get('delay_left_ms') or 0))}"
    return "OOM" if r.cg.under_oom else "-"


def table_lines(frame: Frame) -> list[str]:
    head = ["CGROUP", "USAGE", "LIMIT", "", "BAD", "DELAY", "OOM", "TASKS"]
    rows: list[list[str]] = []
    for r in frame.rows:
        indent = "  " * r.depth if frame.sort == "tree" else ""
        name = r.cg.path if r.depth == 0 or frame.sort != "tree" else r.cg.path.name
        rows.append(
            [
                indent + printable(name),
                format_bytes(r.cg.usage_bytes),
                "max" if r.cg.limit_bytes is None else format_bytes(r.cg.limit_bytes),
                bar(r.cg.usage_bytes, r.cg.limit_bytes, r.valve),
                badness_short(r.cg.badness, r.cg.badness_source),
                format_duration_ms(r.cg.oom_delay_ms),
                oom_state(r),
                str(r.cg.nr_tasks),
            ]
        )
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    right = {1, 2, 7}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [fmt(head), *(fmt(r) for r in rows)]


def victim_lines(frame: Frame) -> list[str]:
    out = [f"NEXT VICTIM per OOM domain (policy {frame.policy}):"]
    for v in frame.victims:
        where = "host" if v.domain == "/" else printable(v.domain)
        limit = "" if v.limit is None else f" (limit {format_bytes(v.limit)})"
        if v.victim is None:
            who = "nobody killable"
        else:
            p = v.victim
            who = (
                f"pid {p.pid} ({printable(p.comm)}) in {printable(p.cgroup)}, badness "
                f"{badness_short(p.badness, p.badness_source)}, rss {format_bytes(p.rss_kb * 1024)}"
            )
            if v.group is not None:
                who += f" + oom.group {printable(v.group)}"
        out.append(f"  {where}{limit}: {who}")
    return out


def kill_lines(frame: Frame) -> list[str]:
    out = ["RECENT KILLS:"]
    if not frame.kills:
        return [*out, "  none"]
    for ev in reversed(frame.kills):
        when = str(ev.get("time", ""))[11:19]
        by = ev.get("by") or ("kernel" if ev.get("kind") == "oom_kill" else "")
        out.append(
            f"  {when}  {ev.get('kind')}  pid {ev.get('pid')} ({printable(ev.get('comm'))}) "
            f"in {printable(ev.get('cgroup'))}" + (f"  by {by}" if by else "")
        )
    return out


def frame_lines(frame: Frame, stamp: str) -> list[str]:
    daemons = f"{frame.daemons} daemon(s) running" if frame.daemons else "no daemon running"
    return [
        f"memcgctl top — {printable(frame.root)} — {stamp} — sort {frame.sort}, "
        f"policy {frame.policy}, {frame.processes} processes, {daemons}",
        "",
        *table_lines(frame),
        "",
        *victim_lines(frame),
        "",
        *kill_lines(frame),
    ]


def renderable(frame: Frame, stamp: str) -> Any:
    """The screen for rich's Live: the same lines, literally (no markup)."""
    from rich.text import Text

    return Text("\n".join([*frame_lines(frame, stamp), "", KEYS]))
