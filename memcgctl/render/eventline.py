"""One OOM event as one readable line (``events`` without ``--json``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from memcgctl.vocab.records import Event
from memcgctl.vocab.reportnotes import LogGap, parse_gap

_E = TypeVar("_E", bound=Mapping[str, object])


def gap_text(code: object, ev: Mapping[str, object]) -> str:
    """A kill event's note (:class:`~memcgctl.vocab.reportnotes.LogGap`) in words; a
    note this version does not know is shown as it is."""
    gap, value = parse_gap(str(code))
    if gap is LogGap.NO_KILL_LINE:
        which = "the oom-kill summary" if value == "summary" else "the 'Kill process' line"
        return f"no 'Killed process' line in the log: only {which} names this kill"
    if gap is LogGap.CHOSE_OTHER:
        return (
            f"the kernel chose pid {value} and killed pid {ev.get('pid')}: the "
            "memcgs are the chosen task's"
        )
    if gap is LogGap.SUMMARY_CUT:
        return f"the oom-kill summary is cut short at {value!r}"
    if gap is LogGap.NO_CONSTRAINT:
        return (
            "the oom-kill summary prints no constraint: it is known only from a "
            "'Memory cgroup out of memory' message"
        )
    if gap is LogGap.NO_HEADER:
        return (
            "no 'invoked oom-killer' line before this kill: the report began before "
            "the log (or was rate-limited)"
        )
    if gap is LogGap.KILL_LINE_CUT:
        return "the 'Killed process' line is cut short: its sizes are unknown"
    return str(code)


def worded(ev: _E) -> _E:
    """``ev`` as shown (its text and its JSON): its notes in words."""
    notes = ev.get("notes")
    if not isinstance(notes, list) or not notes:
        return ev
    out: dict[str, Any] = dict(ev)
    out["notes"] = [gap_text(n, ev) for n in notes]
    return cast("_E", out)


def format_event(ev: Event) -> str:
    """One readable line: time, kind, cgroup, then what the source knows."""
    when = ev.get("time") or ev.get("log_time") or "-"  # a saved log may lack a wall clock
    parts = [str(when), f"{ev.get('kind', '?'):<16}", str(ev.get("cgroup") or "-")]
    pid = ev.get("pid")
    if pid is not None:
        parts.append(f"pid {pid} ({ev.get('comm', '?')})")
    elif ev.get("kind") == "oom_kill":
        parts.append("pid unknown")
    details = []
    for key, label in (
        ("constraint", ""),
        ("oom_memcg", "oom_memcg="),
        ("oom_group", "oom_group="),
        ("anon_rss_kb", "anon-rss="),
        ("file_rss_kb", "file-rss="),
        ("shmem_rss_kb", "shmem-rss="),
        ("oom_score_adj", "oom_score_adj="),
        ("count", "+"),
        ("mechanism", "via "),
        ("by", "by "),
    ):
        value = ev.get(key)
        if value is None:
            continue
        suffix = "kB" if key.endswith("_kb") else ""
        details.append(f"{label}{value}{suffix}")
    if details:
        parts.append(" ".join(details))
    parts.append(f"[{ev.get('source', '?')}]")
    notes = ev.get("notes")
    if isinstance(notes, list) and notes:  # what a saved log left unsaid
        parts.append("(" + "; ".join(gap_text(n, ev) for n in notes) + ")")
    return "  ".join(parts)
