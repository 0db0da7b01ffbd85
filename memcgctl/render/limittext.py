"""The words of ``set-limit``: what was (or would be) killed and written."""

from __future__ import annotations

from typing import TYPE_CHECKING

from memcgctl.render.safetext import printable
from memcgctl.vocab.units import format_bytes

if TYPE_CHECKING:
    from memcgctl.actions.shrink import ShrinkReport


def _limit(n: int | None) -> str:
    return "max" if n is None else format_bytes(n)


def shrink_lines(r: ShrinkReport) -> list[str]:
    """``/a: memory.max 256.0M -> 100.0M (usage 181.0M): killed 1 process by policy``
    and one line per process killed (or that would be)."""
    name = "memory.limit_in_bytes" if r.version == 1 else "memory.max"
    head = f"{printable(r.cgroup)}: {name} {_limit(r.limit_before)} -> {_limit(r.limit)}"
    head += f" (usage {format_bytes(r.usage_before)})"
    verb = "would kill" if r.dry_run else "killed"
    if r.killed:
        head += f": {verb} {len(r.killed)} process(es) by policy first"
        if r.dry_run:
            head += " (estimated from their rss + swap)"
    elif r.limit is not None and r.usage_before > r.limit and r.dry_run:
        head += ": nothing killable to make room"
    if r.dry_run:
        head = head.replace(" -> ", " would be set to ", 1)
    lines = [head]
    for k in r.killed:
        lines.append(
            f"  {verb} {k.pid} ({printable(k.comm)}) in {printable(k.cgroup)}, "
            f"badness {k.badness}, rss+swap {format_bytes(k.rss_kb << 10)}"
        )
    if not r.dry_run and r.usage_after is not None:
        lines.append(f"  usage now {format_bytes(r.usage_after)}")
    return lines
