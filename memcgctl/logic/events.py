"""OOM events as data: filtering by subtree and time, merging the kernel log's history
with the journal (each kill once), and counter increases of memory.events as events.
Pure functions; ``watch/follower.py`` is the loop that feeds them live."""

from __future__ import annotations

from collections.abc import Iterable

from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.cgpath import in_subtree as in_subtree  # defined beside CgroupPath
from memcgctl.vocab.records import COUNTER_KINDS, Event, counter_event, merged, with_source

# memory.events keys reported as events, in this order
V2_EVENT_KEYS = COUNTER_KINDS


def event_cgroups(ev: Event) -> list[str]:
    """Cgroups an event is about (for the CG filter): its cgroup, and for a kill also
    the OOM domain and the oom.group."""
    out: list[object] = [ev.get("cgroup")]
    if ev.get("kind") == "oom_kill" and not ev.get("cgroup"):
        out += [ev.get("oom_group"), ev.get("oom_memcg")]
    return [c for c in out if isinstance(c, str)]


def matches(ev: Event, root: CgroupPath, since_iso: str | None) -> bool:
    if since_iso is not None and str(ev.get("time", "")) < since_iso:
        return False
    if root == "/":
        return True
    return any(in_subtree(c, root) for c in event_cgroups(ev))


def merge_history(kernel: Iterable[Event], journal: Iterable[Event]) -> list[Event]:
    """Kernel-log events plus journal records, each kill once (the ``dedup`` key), in
    time order.  Journal copies of kernel kills fill in what the ring has overwritten."""
    out: list[Event] = []
    journaled: dict[str, Event] = {}
    for rec in journal:
        key = rec.get("dedup")
        if key is None:
            out.append(with_source(rec, "journal"))
        else:
            journaled.setdefault(str(key), rec)
    for ev in kernel:
        key = ev.get("dedup")
        known = journaled.pop(str(key), None) if key is not None else None
        if known is not None:
            # the journal copy may know more (e.g. the cgroup of a kill whose report was
            # rate-limited, found live from the counters)
            ev = merged(known, ev)
        out.append(ev)
    for rec in journaled.values():
        out.append(with_source(rec, "journal"))
    out.sort(key=lambda e: str(e.get("time", "")))
    return out


class HistoryMerge:
    """:func:`merge_history` with :func:`oom_starts` for a journal read once, record by
    record (``events`` over a journal of any size), in three parts whose merge by
    time (:func:`heapq.merge`, which keeps the order of its inputs on a tie) is the
    same stable sort of the same events:

    * :meth:`journal_record` for each record: ``(0, event)`` for a record of its own
      (no ``dedup`` key), ``(2, event)`` for the first copy of a kernel kill the ring
      no longer holds, None for the rest (a copy merged into a kill of the ring, a
      second copy).  The caller sorts each part by time, however it likes.
    * :meth:`kernel_side` afterwards: the ring's kills (and the ``under_oom`` that
      starts each memcg OOM episode), merged with their journal copies, sorted.

    Memory: the ring's events, the dedup keys of kernel kills seen in the journal, and
    the journal's ``under_oom`` records of the ring's OOM domains."""

    def __init__(self, kernel: list[Event], invoked: dict[str, str]) -> None:
        self.kernel = kernel
        self.invoked = invoked
        self.keys = {str(ev.get("dedup")) for ev in kernel if ev.get("dedup") is not None}
        self.domains = {
            ev.get("oom_memcg")
            for ev in kernel
            if ev.get("kind") == "oom_kill" and ev.get("cause") == "memcg"
        }
        self.copies: dict[str, Event] = {}
        self.seen: set[str] = set()
        self.known: list[Event] = []  # under_oom records oom_starts looks at

    def journal_record(self, rec: Event) -> tuple[int, Event] | None:
        if rec.get("kind") == "under_oom" and rec.get("cgroup") in self.domains:
            self.known.append(rec)
        key = rec.get("dedup")
        if key is None:
            return 0, with_source(rec, "journal")
        key = str(key)
        if key in self.keys:
            self.copies.setdefault(key, rec)
            return None
        if key in self.seen:
            return None
        self.seen.add(key)
        return 2, with_source(rec, "journal")

    def kernel_side(self) -> list[Event]:
        starts = oom_starts(self.kernel, self.invoked, self.known)
        out: list[Event] = []
        for ev in [*starts, *self.kernel]:  # on a tie: the start first
            key = ev.get("dedup")
            known = self.copies.pop(str(key), None) if key is not None else None
            out.append(merged(known, ev) if known is not None else ev)
        out.sort(key=event_time)
        return out


def event_time(ev: Event) -> str:
    """The key history is sorted by."""
    return str(ev.get("time", ""))


# kills of one OOM domain closer than this belong to one OOM episode (one under_oom)
EPISODE_GAP_S = 1.0


def _seconds(iso: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def oom_starts(
    kernel: Iterable[Event], invoked: dict[str, str], known: Iterable[Event] = ()
) -> list[Event]:
    """``under_oom`` events for the history: one per OOM episode of each memcg OOM
    domain that the kernel log shows killing, stamped with the kernel's own time of the
    OOM (``invoked``: a kill's dedup key -> the time of its report's ``invoked
    oom-killer`` line), so the history shows when each domain ran out, as ``--follow``
    does.  An episode someone already reported (``known``: the daemon journals its
    under_oom) is not reported twice."""
    reported: dict[str, list[float]] = {}
    for ev in known:
        t = _seconds(str(ev.get("time", "")))
        if ev.get("kind") == "under_oom" and t is not None:
            reported.setdefault(str(ev.get("cgroup")), []).append(t)
    out: list[Event] = []
    last_kill: dict[str, float] = {}
    kills = [e for e in kernel if e.get("kind") == "oom_kill" and e.get("cause") == "memcg"]
    for ev in sorted(kills, key=lambda e: str(e.get("time", ""))):
        domain = ev.get("oom_memcg")
        killed_at = _seconds(str(ev.get("time", "")))
        if not isinstance(domain, str) or killed_at is None:
            continue
        start = invoked.get(str(ev.get("dedup")), str(ev["time"]))
        started_at = _seconds(start)
        if started_at is None:
            continue
        prev = last_kill.get(domain)
        last_kill[domain] = killed_at
        if prev is not None and started_at - prev <= EPISODE_GAP_S:
            continue  # the same episode: a second kill
        if any(started_at - EPISODE_GAP_S <= t <= killed_at for t in reported.get(domain, [])):
            continue
        out.append({"time": start, "kind": "under_oom", "cgroup": domain, "source": "kmsg"})
    return out


def diff_counters(
    cg: CgroupPath, old: dict[str, int], new: dict[str, int], filename: str, now_iso: str
) -> list[Event]:
    """Events for counters of memory.events that went up (a value that went down means
    the file belongs to a new cgroup of the same name: take it as the new base).

    ``source`` is ``memory.events`` whichever of the two files was read;
    ``file`` says which (``memory.events.local`` where the kernel has it, so that one
    kill is reported once, on its own cgroup, not once per ancestor)."""
    out: list[Event] = []
    for key in V2_EVENT_KEYS:
        before, after = old.get(key), new.get(key)
        if after is None or before is None or after <= before:
            continue
        out.append(counter_event(key, cg, filename, after - before, after, now_iso))
    return out
