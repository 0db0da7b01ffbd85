"""The event records: what ``events`` prints, what the journal holds.

One record is a JSON object, one line of ``journal.jsonl`` or one element of
``events --format json``'s ``events``; its keys are the output's keys, so records are
``TypedDict``\\ s (plain dicts at run time, typed for mypy), one per family of kinds:

* :class:`KernelEvent` — what the kernel log says (``oom_kill``, ``oom_group_kill``,
  ``oom_reaped``, ``oom_reap_failed``, ``oom_victim_exiting``, ``oom_no_victim``);
* :class:`Notification` — a v1 eventfd (``under_oom``, ``oom_resolved``);
* :class:`CounterEvent` — a v2 ``memory.events`` counter that went up (``high``,
  ``max``, ``oom``, ``oom_kill``, ``oom_group_kill``);
* :class:`UserKill` — a process memcgctl killed (``user_kill``, ``manual_kill``);
* :class:`DaemonRecord` — a decision of the daemon (``daemon_*``, ``under_oom``,
  ``oom_resolved``, ``would_kill``, ``valve_frozen``…).

Each has one constructor here; nothing else builds a record.  Times are ISO 8601 UTC
with microseconds and a ``Z`` (``2026-11-30T13:00:00.000000Z``), made by :func:`utc_iso`
alone: strings of one width compare in time order, which ``--since`` and the merge rely
on.  :func:`parse_record` is the one validating reader of a stored record.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from memcgctl.vocab.structs import TypedDict, cast

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# -- the clock ----------------------------------------------------------------------------


def _utc(ts: float) -> tuple[time.struct_time, int] | None:
    """``ts`` as UTC calendar time and microseconds, rounded as
    ``datetime.fromtimestamp(ts, timezone.utc)`` rounds (half to even, a carry into the
    second); None where no ``datetime`` could hold it (not in years 1 to 9999).  With
    ``time`` alone: the daemon keeps no ``datetime`` resident (0.3 MiB, issue 22)."""
    try:
        frac, whole = math.modf(ts)
        us = round(frac * 1e6)
        if us >= 1_000_000:
            whole, us = whole + 1, us - 1_000_000
        elif us < 0:
            whole, us = whole - 1, us + 1_000_000
        tm = time.gmtime(int(whole))
    except (OverflowError, OSError, ValueError):
        return None
    return (tm, us) if 1 <= tm.tm_year <= 9999 else None


def utc_iso(ts: float) -> str | None:
    """Epoch seconds as the records' time string; None if no datetime can hold it."""
    utc = _utc(ts)
    if utc is None:
        return None
    tm, us = utc
    date = f"{tm.tm_year:04}-{tm.tm_mon:02}-{tm.tm_mday:02}"
    return f"{date}T{tm.tm_hour:02}:{tm.tm_min:02}:{tm.tm_sec:02}.{us:06}Z"


def utc_now_iso() -> str:
    return utc_iso(time.time()) or EPOCH_ISO


def utc_iso_before(seconds: float, now: float | None = None) -> str:
    """The time string ``seconds`` before ``now`` (default: the current time)."""
    return utc_iso((time.time() if now is None else now) - seconds) or EPOCH_ISO


def utc_file_stamp(ts: float | None = None) -> str:
    """The same clock, compact, for file names (``journal.jsonl.corrupt-20261130T130000Z``)."""
    utc = _utc(time.time() if ts is None else ts)
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(0) if utc is None else utc[0])


EPOCH_ISO = "1970-01-01T00:00:00.000000Z"

# -- the record types -----------------------------------------------------------------


class _Kind(TypedDict):
    kind: str


class _Record(_Kind, total=False):
    time: str | None  # None only for a saved log without a wall clock
    cgroup: str | None  # None: the kernel did not say (a rate-limited report)
    source: str  # kmsg, eventfd, memory.events, journal


class KernelEvent(_Record, total=False):
    seq: int
    usec: int | None
    dedup: str  # boot id (or the saved log's name) : sequence number
    line: int  # saved logs: the line number, and the log's own clocks
    uptime_s: float
    log_time: str
    pid: int
    comm: str
    uid: int | None
    constraint: str | None
    oom_memcg: str | None
    task_memcg: str | None
    oom_group: str | None
    anon_rss_kb: int | None
    file_rss_kb: int | None
    shmem_rss_kb: int | None
    total_vm_kb: int | None
    pgtables_kb: int | None
    oom_score_adj: int | None
    message: str | None
    cause: str | None  # memcg (a cgroup limit), system (host-wide, cpuset, mempolicy)
    notes: list[str]  # saved logs: what the log left unsaid or ambiguous
    cgroup_from: str  # "counters": found from the kernel's per-cgroup kill counters


class Notification(_Record, total=False):
    removed: bool  # oom_resolved because the cgroup is gone


class CounterEvent(_Record, total=False):
    file: str  # memory.events or memory.events.local
    count: int
    total: int


class UserKill(_Record, total=False):
    pid: int
    comm: str
    signal: str
    mechanism: str  # actions.killreport's mechanism names, "pidfd" for one process
    target: str
    by: str  # kill-all, daemon


class DaemonRecord(_Record, total=False):
    by: str  # daemon (the journal copy); under_oom/oom_resolved: who ended the episode
    # daemon_started / daemon_stopped
    policy: str
    dry_run: bool
    instance: str
    kernel_kills: int
    agreed: int
    # daemon_took_over, daemon_delay_changed, daemon_released, under_oom, oom_resolved
    delay_ms: int
    was_ms: int
    mode: str  # oom (v1), valve (v2), host
    domain: str
    reason: str
    restored: list[str]
    adopted: bool
    after_ms: int
    kills: int
    # daemon_kill, would_kill, kernel_kill, no_victim, daemon_escalated, would_escalate
    pid: int
    comm: str
    victim_cgroup: str
    badness: int
    round: int
    waited_ms: int
    late_ms: float
    plan_age_ms: float  # daemon_kill: the victim was chosen ahead, this long before
    reasons: list[str]
    kill_group: str
    group_pids: list[int]
    killed: list[int]
    target: str
    rounds: int
    would_kill_pid: int | None
    agree: bool


Event = KernelEvent | Notification | CounterEvent | UserKill | DaemonRecord

# memory.events keys reported as events, in this order
COUNTER_KINDS = ("high", "max", "oom", "oom_kill", "oom_group_kill")

# -- constructors -----------------------------------------------------------------------


def kernel_event(
    kind: str, cgroup: str | None, time: str | None, seq: int, usec: int | None, dedup: str
) -> KernelEvent:
    """The head of an event of the kernel log; the assembler adds what the line says."""
    return {
        "time": time,
        "kind": kind,
        "cgroup": cgroup,
        "source": "kmsg",
        "seq": seq,
        "usec": usec,
        "dedup": dedup,
    }


def notification(kind: str, cgroup: str, source: str, removed: bool = False) -> Notification:
    ev: Notification = {"time": utc_now_iso(), "kind": kind, "cgroup": cgroup, "source": source}
    if removed:
        ev["removed"] = True
    return ev


def add_fields(ev: KernelEvent, fields: Mapping[str, Any]) -> None:
    """Add what a kernel-log line says to its event, in place (keys in line order)."""
    cast("dict[str, Any]", ev).update(fields)


def counter_event(
    kind: str, cgroup: str, filename: str, count: int, total: int, time: str
) -> CounterEvent:
    """``source`` is ``memory.events`` whichever file was read; ``file``
    says which."""
    return {
        "time": time,
        "kind": kind,
        "cgroup": cgroup,
        "source": "memory.events",
        "file": filename,
        "count": count,
        "total": total,
    }


def user_kill(
    *,
    cgroup: str,
    pid: int,
    comm: str,
    signal: str,
    mechanism: str,
    target: str,
    by: str,
    kind: str = "user_kill",
    time: str | None = None,
) -> UserKill:
    """A process memcgctl killed: ``user_kill`` when the target was under OOM (counted
    as ``user``), ``manual_kill`` for a healthy cgroup torn down (counted nowhere)."""
    return {
        "time": time or utc_now_iso(),
        "kind": kind,
        "cgroup": cgroup,
        "source": "journal",
        "pid": pid,
        "comm": comm,
        "signal": signal,
        "mechanism": mechanism,
        "target": target,
        "by": by,
    }


def daemon_record(kind: str, cgroup: str, **fields: Any) -> DaemonRecord:
    """A decision of the daemon, as its core reports it (no time yet: see
    :func:`journaled`)."""
    return cast(DaemonRecord, {"kind": kind, "cgroup": cgroup, **fields})


def journaled(rec: DaemonRecord) -> DaemonRecord:
    """The daemon's journal copy of one of its records: stamped now, ``by: daemon``."""
    return cast(DaemonRecord, {"time": utc_now_iso(), "source": "journal", "by": "daemon", **rec})


def journal_copy(ev: Event) -> Event:
    """The journal copy of a kernel event: its keys that have a value."""
    return cast(Event, {k: v for k, v in ev.items() if v is not None})


def with_source(ev: Event, source: str) -> Event:
    """A copy of ``ev`` with ``source`` set unless it has one."""
    out = cast(Event, dict(ev))
    out.setdefault("source", source)
    return out


def merged(known: Event, ev: Event) -> Event:
    """``known`` (the journal copy) updated with what ``ev`` knows."""
    return cast(Event, {**known, **{k: v for k, v in ev.items() if v is not None}})


# -- the one validating reader ---------------------------------------------------------

# The keys readers rely on, and their types (None allowed except for kind and time).
_STR_KEYS = frozenset(
    {
        "cgroup", "comm", "source", "dedup", "constraint", "oom_memcg", "task_memcg",
        "signal", "mechanism", "target", "by", "cause", "file",
    }
)  # fmt: skip
_INT_KEYS = frozenset(
    {
        "pid", "uid", "seq", "anon_rss_kb", "file_rss_kb", "shmem_rss_kb",
        "oom_score_adj", "total_vm_kb", "count",
    }
)  # fmt: skip


def _finite(value: object) -> bool:
    """No NaN/Infinity anywhere (JSON readers of our output would choke on them)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    return True


def parse_record(obj: object) -> Event | None:
    """A parsed journal line as a record, or None if it is not a record readers can use
    safely (not an object, ``kind``/``time`` not strings, a known key of the wrong type,
    NaN or Infinity)."""
    if not isinstance(obj, dict):
        return None
    if not isinstance(obj.get("kind"), str) or not isinstance(obj.get("time"), str):
        return None
    for key, value in obj.items():
        if value is None:
            continue
        if key in _STR_KEYS and not isinstance(value, str):
            return None
        if key in _INT_KEYS and type(value) is not int:
            return None
    return cast(Event, obj) if _finite(obj) else None
