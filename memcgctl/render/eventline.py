"""One OOM event as one readable line (``events`` without ``--json``)."""

from __future__ import annotations

from memcgctl.vocab.records import Event


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
        parts.append("(" + "; ".join(str(n) for n in notes) + ")")
    return "  ".join(parts)
