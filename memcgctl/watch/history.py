"""The kernel log's history, journaled: every kernel kill seen is appended to the journal
(deduplicated by boot id and kmsg sequence number), so that kill counts stay complete
after the kernel's ring buffer has rotated.  Used by ``events`` and ``counters``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from memcgctl.env import Env
from memcgctl.render.diag import diagnostic
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import MemcgctlError, UsageProblem

if TYPE_CHECKING:
    from memcgctl.vocab.records import Event, KernelEvent


class KillRecorder:
    """Appends kernel kills to the journal; warns once if the state dir is not writable."""

    def __init__(self, env: Env) -> None:
        from memcgctl.state.journal import Journal
        from memcgctl.state.retention import cgroup_owner

        self.journal = Journal(env.state_dir, owner_of=cgroup_owner(lambda cg: env.fs.path(cg)))
        self.warned = False

    def record(self, events: Sequence[Event]) -> bool:
        """Journal the kills among events; False if that failed."""
        from memcgctl.vocab.records import journal_copy

        kills = [journal_copy(e) for e in events if e.get("kind") == "oom_kill"]
        if not kills:
            return True
        try:
            self.journal.append(kills)
            return True
        except MemcgctlError as exc:
            self.warn(exc)
            return False

    def warn(self, exc: MemcgctlError) -> None:
        if not self.warned:
            self.warned = True
            diagnostic(f"not journaling kernel kills: {exc.message}")


def open_kmsg(env: Env, quiet: bool = False) -> Any:
    from memcgctl.kernel.kmsgdev import KmsgReader

    try:
        return KmsgReader(env.kmsg).open()
    except UsageProblem:
        raise  # --kmsg names something that is no kernel log: say so (exit 2)
    except MemcgctlError as exc:
        if not quiet:
            diagnostic(f"kernel log unavailable, using the journal only: {exc.message}")
        return None


def kernel_history(
    env: Env,
    recorder: KillRecorder,
    root: CgroupPath = ROOT,
    after_seq: int | None = None,
    follower_needed: bool = True,
) -> tuple[Any, Any, list[KernelEvent]]:
    """Open the kernel log, parse the ring's history (only records after ``after_seq``
    when given), journal its kills.

    Returns (reader, follower, events); without ``follower_needed`` the follower (and
    the kernel-log parser it imports) is made only if there are records to parse, else
    None: ``counters`` with nothing new in the ring starts without them."""

    def journal_kill(ev: Event) -> None:
        recorder.record([ev])

    reader = open_kmsg(env)
    raws: list[bytes] = []
    if reader is not None:
        raws = reader.read_available()
        if after_seq is not None and raws:
            from bisect import bisect_right

            from memcgctl.logic.kmsgparse import record_seq

            newest = record_seq(raws[-1])
            if after_seq > newest:
                # a cursor past the ring's end would hide every kill: forged or stale
                recorder.journal.discard_cursor(
                    f"seq {after_seq} is past the kernel log's newest record {newest}"
                )
            else:
                # the ring is in sequence order: find the first record after the cursor
                raws = raws[bisect_right(raws, after_seq, key=record_seq) :]
    if not follower_needed and not raws:
        return reader, None, []
    from memcgctl.watch.follower import Follower

    follower = Follower(
        env.fs,
        root,
        reader,
        env.proc.boot_time(),
        env.proc.boot_id(),
        emit=lambda ev: None,
        on_kernel_kill=journal_kill,
    )
    events: list[KernelEvent] = []
    if reader is not None:
        events = follower.feed_kmsg(raws, live=False)
        recorder.record(events)
    return reader, follower, events


def history_in_order(
    kernel: Sequence[Event],
    invoked: dict[str, str],
    journal: Iterable[Event],
    root: CgroupPath = ROOT,
    since_iso: str | None = None,
    run: int | None = None,
) -> Iterator[Event]:
    """The history of ``root`` (``events`` without ``--follow``): the kernel log's
    events and the journal's records merged (:func:`memcgctl.logic.events.merge_history`,
    with the ``under_oom`` of each OOM episode, :func:`~memcgctl.logic.events.oom_starts`)
    in time order, in bounded memory: the journal is read once, record by record, and
    its own records sorted by :func:`memcgctl.state.spill.sorted_bounded` (``run``
    records at a time; the journal is not in time order: kernel kills are journaled
    when first seen, with the kernel's older time); the kernel log's events, which the
    ring bounds, are merged in."""
    import heapq

    from memcgctl.logic.events import HistoryMerge, event_time, matches
    from memcgctl.state.spill import RUN, sorted_bounded

    merge = HistoryMerge(list(kernel), invoked)
    own = (
        part
        for part in map(merge.journal_record, journal)
        if part is not None and matches(part[1], root, since_iso)
    )

    def key(part: tuple[int, Event]) -> tuple[str, int]:
        return event_time(part[1]), part[0]

    journal_side = sorted_bounded(own, key, run or RUN)  # reads the whole journal
    kernel_side = ((1, ev) for ev in merge.kernel_side() if matches(ev, root, since_iso))
    # on a tie: the journal's own records, the kernel log's, then old kernel kills
    for _, ev in heapq.merge(journal_side, kernel_side, key=key):
        yield ev
