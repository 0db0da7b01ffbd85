"""``events --follow``: :class:`Follower`, the one ``poll()`` loop over every source of
one subtree: the kmsg fd, v1 eventfds, v2 memory.events fds, the journal, and a timeout
that re-scans the hierarchy for new cgroups.  Nothing busy-waits: while idle the loop
sleeps in ``poll()`` and wakes every ``rescan_s`` to look for new cgroups (a directory
walk of the watched subtree)."""

from __future__ import annotations

import contextlib
import select
import time
from collections.abc import Callable

from memcgctl.kernel.cgroupfiles import V2_EVENTS, V2_EVENTS_LOCAL
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.kmsgdev import KmsgReader
from memcgctl.kernel.notify import DirWatch, EventsFileWatch, OomControlWatch
from memcgctl.logic.events import V2_EVENT_KEYS, diff_counters, matches
from memcgctl.logic.oomassembler import OomAssembler, kmsg_events
from memcgctl.state.journal import Journal
from memcgctl.state.journallines import JournalTail
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import Vanished
from memcgctl.vocab.records import (
    Event,
    KernelEvent,
    notification,
    utc_now_iso,
    with_source,
)

KERNEL_KILL_KINDS = frozenset({"oom_kill"})
# cgroup notifications the follower sees itself; the journal's copies (the daemon
# journals them too) would print each twice
LIVE_NOTIFICATION_KINDS = frozenset({"under_oom", "oom_resolved", *V2_EVENT_KEYS}) - {"oom_kill"}
# notifications wait this long for the kernel log's record of the same OOM (flush())
NOTIFICATION_HOLD_S = 0.03
# a kill's OOM time stamps an under_oom read at most this long after the kill
INVOKED_FRESH_S = 1.0
HELD_SOURCES = frozenset({"eventfd", "memory.events"})
# without inotify, how often --follow looks at the journal file
JOURNAL_POLL_S = 0.25


class Follower:
    """Tails every source of one subtree and calls ``emit`` for each new event.

    ``on_kernel_kill`` is called (after ``emit``) for every kernel kill, to journal it.

    Each event is emitted once and, within what one wake-up of ``poll()`` brought, in
    time order: before cgroup notifications are emitted the kernel log is drained, so an
    ``oom_kill`` the kernel logged before an ``oom_resolved`` comes first.  A kill seen
    both in the kernel log and in the journal (the same ``dedup`` key) is emitted once.
    A v1 memcg is reported ``oom_resolved`` only once ``under_oom`` has been clear and
    its eventfd quiet for ``resolve_check_s``: the kernel signals the eventfd on every
    OOM invocation, and one OOM episode makes several (one kill, a victim exiting…),
    which must not print as several ``under_oom`` / ``oom_resolved`` pairs.

    One OOM is one pair per OOM *domain*: v1 signals the eventfd of the memcg that ran
    out and of every descendant (``mem_cgroup_oom_notify`` walks the subtree), so a
    signalled cgroup whose ancestor is under OOM too belongs to the ancestor's episode
    (:meth:`collapse`).  Its ``under_oom`` is stamped with the kernel's own time of the
    OOM (the ``invoked oom-killer`` line of the report whose kill names the domain)
    when the kernel logs one, so two followers print the same time and the notification
    sorts before the kill it caused.
    """

    def __init__(
        self,
        fs: CgroupFs,
        root: CgroupPath,
        kmsg: KmsgReader | None,
        boot_time: float,
        boot_id: str,
        emit: Callable[[Event], None],
        on_kernel_kill: Callable[[Event], None] | None = None,
        rescan_s: float = 1.5,
        resolve_check_s: float = 0.1,
    ) -> None:
        self.fs = fs
        self.root = root
        self.kmsg = kmsg
        self.emit = emit
        self.on_kernel_kill = on_kernel_kill
        self.rescan_s = rescan_s
        self.resolve_check_s = resolve_check_s
        self.assembler = OomAssembler(boot_time, boot_id)
        self.poller = select.poll()
        self.v1: dict[CgroupPath, OomControlWatch] = {}
        self.v2: dict[CgroupPath, EventsFileWatch] = {}
        self.by_fd: dict[int, OomControlWatch | EventsFileWatch] = {}
        self.under_oom: set[CgroupPath] = set()
        self.gone: set[str] = set()  # cgroups whose watch could not be set up
        self._next_rescan = 0.0
        # kernel oom_kill counters of watched cgroups, to find the cgroup of a kill
        # whose report (and summary line) the kernel rate-limited away
        self.kill_counts: dict[CgroupPath, int] = {}
        # (event, monotonic time it may be emitted): see flush()
        self.pending: list[tuple[Event, float]] = []
        self.seen_dedup: set[str] = set()
        self.last_signal: dict[str, float] = {}  # cg -> monotonic time of its last eventfd
        # OOM domain -> (the kernel's time of its last OOM invocation, from a kill's
        # report; monotonic time we read it): see _invoked()
        self.oom_invoked: dict[str, tuple[str, float]] = {}
        self.invoked_by_kill: dict[str, str] = {}  # history only: kill dedup -> OOM time
        self._in_step = False
        self.journal_tail: JournalTail | None = None
        self.journal_watch: DirWatch | None = None
        if kmsg is not None and kmsg.is_device:
            self.poller.register(kmsg.fileno(), select.POLLIN)

    def tail_journal(self, journal: Journal) -> None:
        """Also emit what is appended to the journal from now on (the daemon's and
        kill-all's kills), woken by inotify on the state directory where it can."""
        self.journal_tail = JournalTail(journal)
        self.journal_watch = DirWatch.open(str(journal.state_dir))
        if self.journal_watch is not None:
            self.poller.register(self.journal_watch.fileno(), select.POLLIN)

    def read_journal(self) -> None:
        if self.journal_tail is None:
            return
        for rec in self.journal_tail.read_new():
            if rec.get("kind") in LIVE_NOTIFICATION_KINDS:
                continue  # the daemon's copy of what the eventfd / memory.events said
            self._out(with_source(rec, "journal"))

    # -- kmsg ------------------------------------------------------------------------
    def feed_kmsg(self, raws: list[bytes], live: bool = True) -> list[KernelEvent]:
        out = []
        fs = self.fs
        for ev in kmsg_events(self.assembler, raws):
            invoked = self.assembler.invoked_time
            if ev.get("kind") == "oom_kill" and ev.get("oom_memcg") and invoked:
                domain = fs.from_proc_path(str(ev["oom_memcg"]))
                self.oom_invoked[domain] = (invoked, time.monotonic())
                if not live:  # the history's under_oom (logic.events.oom_starts)
                    self.invoked_by_kill[str(ev.get("dedup"))] = invoked
            if ev.get("cgroup"):
                ev["cgroup"] = fs.from_proc_path(str(ev["cgroup"]))
            if ev.get("oom_memcg"):
                ev["oom_memcg"] = fs.from_proc_path(str(ev["oom_memcg"]))
            if ev.get("oom_group"):
                ev["oom_group"] = fs.from_proc_path(str(ev["oom_group"]))
            out.append(ev)
        if live:
            for ev in out:
                if ev.get("kind") == "oom_kill":
                    self._account_kill(ev)
                self._emit(ev)
            self._restamp_pending()
            if not self._in_step:
                self.flush()
        return out

    def _kill_count(self, cg: CgroupPath) -> int | None:
        try:
            if self.fs.version == 1:
                return self.fs.oom_control(cg).get("oom_kill")
            return self.fs.events(cg, local=True).get("oom_kill")
        except (Vanished, OSError):
            return None

    def _account_kill(self, ev: KernelEvent) -> None:
        """Keep the per-cgroup kill counts in step; give a kill without a cgroup the
        watched cgroup whose kernel counter went up."""
        raw = ev.get("cgroup")
        cg = CgroupPath.parse(raw) if raw else None  # "" would parse as the root
        if cg and cg in self.kill_counts:
            self.kill_counts[cg] += 1
            return
        if cg:
            return
        for other in sorted(self.kill_counts, key=lambda c: -c.count("/")):
            now = self._kill_count(other)
            if now is not None and now > self.kill_counts[other]:
                self.kill_counts[other] += 1
                ev["cgroup"] = other
                ev["cgroup_from"] = "counters"
                return

    def _emit(self, ev: KernelEvent) -> None:
        """A kernel-log event: out, then journaled if it is a kill."""
        self._out(ev)
        if ev.get("kind") in KERNEL_KILL_KINDS and self.on_kernel_kill is not None:
            self.on_kernel_kill(ev)

    def _out(self, ev: Event) -> None:
        """Queue an event of the subtree for :meth:`flush`, once per ``dedup`` key."""
        key = ev.get("dedup")
        if key is not None:
            if str(key) in self.seen_dedup:
                return
            self.seen_dedup.add(str(key))
        if matches(ev, self.root, None):
            held = self.kmsg is not None and ev.get("source") in HELD_SOURCES
            self.pending.append((ev, time.monotonic() + (NOTIFICATION_HOLD_S if held else 0.0)))

    def _restamp_pending(self) -> None:
        """Give a waiting ``under_oom`` the kernel's time of its OOM (see class doc)."""
        for ev, _ in self.pending:
            if ev.get("kind") != "under_oom" or ev.get("source") != "eventfd":
                continue
            invoked = self._invoked(str(ev.get("cgroup")))
            if invoked is not None:
                ev["time"] = invoked

    def _invoked(self, cg: str) -> str | None:
        """The kernel's time of ``cg``'s OOM, taken once and only while fresh (a kill
        logged more than :data:`INVOKED_FRESH_S` ago belongs to an earlier OOM)."""
        seen = self.oom_invoked.pop(cg, None)
        if seen is None or time.monotonic() - seen[1] > INVOKED_FRESH_S:
            return None
        return seen[0]

    def collapse(self) -> None:
        """One episode per OOM domain: a cgroup under OOM inside another one that is
        (the kernel signalled the whole subtree) is the ancestor's; its ``under_oom``,
        if still waiting, is dropped (see class doc)."""
        inner = {
            cg
            for cg in self.under_oom
            if any(a in self.under_oom for a in CgroupPath(cg).ancestors() if self.root.contains(a))
        }
        if not inner:
            return
        self.under_oom -= inner
        self.pending = [
            (ev, due)
            for ev, due in self.pending
            if not (
                ev.get("kind") == "under_oom"
                and ev.get("source") == "eventfd"
                and ev.get("cgroup") in inner
            )
        ]

    def _domain_of(self, cg: CgroupPath) -> CgroupPath | None:
        """The cgroup under OOM whose episode a signal of ``cg`` belongs to, if any."""
        for a in [cg, *CgroupPath(cg).ancestors()]:
            if a in self.under_oom:
                return a
        return None

    def flush(self, force: bool = False) -> None:
        """Emit the queued events that are due, in time order.

        A cgroup notification is stamped when it is read, a few ms after the kernel
        signalled it, and the kill the kernel logs meanwhile may reach the kmsg fd after
        it: notifications wait ``NOTIFICATION_HOLD_S`` for the kernel log to catch up,
        and nothing stamped later than a waiting one is emitted before it."""
        now = time.monotonic()
        waiting = [str(ev.get("time", "")) for ev, due in self.pending if due > now and not force]
        cutoff = min(waiting) if waiting else None
        out: list[Event] = []
        keep: list[tuple[Event, float]] = []
        for ev, due in self.pending:
            ready = force or due <= now
            if ready and (cutoff is None or str(ev.get("time", "")) < cutoff):
                out.append(ev)
            else:
                keep.append((ev, due))
        self.pending = keep
        out.sort(key=lambda e: str(e.get("time", "")))
        for ev in out:
            self.emit(ev)

    def next_due(self) -> float | None:
        """Seconds until the next queued event is due (None: nothing queued)."""
        if not self.pending:
            return None
        return max(min(due for _, due in self.pending) - time.monotonic(), 0.0)

    # -- watches -----------------------------------------------------------------------
    def rescan(self) -> None:
        """Watch every cgroup of the subtree not watched yet (new cgroups)."""
        try:
            present = list(self.fs.walk(self.root))
        except Vanished:
            present = []
        for cg in present:
            if cg in self.v1 or cg in self.v2:
                continue
            try:
                if self.fs.version == 1:
                    if cg == "/":
                        continue  # the root has no OOM notification
                    w1 = OomControlWatch(self.fs, cg)
                    self.v1[cg] = w1
                    self.by_fd[w1.fileno()] = w1
                    self.poller.register(w1.fileno(), select.POLLIN)
                else:
                    name = V2_EVENTS_LOCAL if self.fs.has_file(cg, V2_EVENTS_LOCAL) else V2_EVENTS
                    if not self.fs.has_file(cg, name):
                        continue
                    w2 = EventsFileWatch(self.fs, cg, name)
                    self.v2[cg] = w2
                    self.by_fd[w2.fileno()] = w2
                    self.poller.register(w2.fileno(), select.POLLPRI | select.POLLERR)
            except (Vanished, OSError):
                continue
            count = self._kill_count(cg)
            if count is not None:
                self.kill_counts[cg] = count

    def _drop(self, cg: CgroupPath) -> None:
        watch: OomControlWatch | EventsFileWatch | None = self.v1.pop(cg, None) or self.v2.pop(
            cg, None
        )
        if watch is None:
            return
        fd = watch.fileno()
        self.by_fd.pop(fd, None)
        self.kill_counts.pop(cg, None)
        with contextlib.suppress(KeyError, ValueError):
            self.poller.unregister(fd)
        watch.close()
        self.under_oom.discard(cg)

    def _under_oom_now(self, cg: CgroupPath) -> bool | None:
        try:
            return bool(self.fs.oom_control(cg).get("under_oom", 0))
        except (Vanished, OSError):
            return None

    def on_eventfd(self, watch: OomControlWatch) -> None:
        cg = watch.cg
        watch.drain()
        if not self.fs.exists(cg):
            # the eventfd fires once when the cgroup is removed
            if cg in self.under_oom:
                self._out(notification("oom_resolved", cg, "eventfd", removed=True))
            self._drop(cg)
            return
        now = time.monotonic()
        self.last_signal[cg] = now
        domain = self._domain_of(cg)
        if domain is not None:  # part of an episode already reported
            self.last_signal[domain] = now
            return
        ev = notification("under_oom", cg, "eventfd")
        invoked = self._invoked(cg)
        if invoked is not None:
            ev["time"] = invoked  # the kernel logged this OOM's kill before we read this
        self._out(ev)
        self.under_oom.add(cg)
        self.collapse()

    def check_resolved(self, cg: CgroupPath, now: float | None = None) -> None:
        state = self._under_oom_now(cg)
        if state is None:
            self._out(notification("oom_resolved", cg, "eventfd", removed=True))
            self._drop(cg)
            return
        now = time.monotonic() if now is None else now
        if not state and now - self.last_signal.get(cg, 0.0) >= self.resolve_check_s:
            self.under_oom.discard(cg)
            self._out(notification("oom_resolved", cg, "eventfd"))

    def on_events_file(self, watch: EventsFileWatch) -> None:
        try:
            new = watch.read()
        except (Vanished, OSError):
            self._drop(watch.cg)
            return
        old, watch.values = watch.values, new
        for ev in diff_counters(watch.cg, old, new, watch.filename, utc_now_iso()):
            self._out(ev)

    # -- the loop ------------------------------------------------------------------------
    def step(self, now: float | None = None) -> None:
        """Wait for one batch of readiness (at most until the next timer) and handle it."""
        now = time.monotonic() if now is None else now
        if now >= self._next_rescan:
            self.rescan()
            self._next_rescan = now + self.rescan_s
        timeout = max(self._next_rescan - now, 0.0)
        if self.under_oom:
            timeout = min(timeout, self.resolve_check_s)
        if self.journal_tail is not None and self.journal_watch is None:
            timeout = min(timeout, JOURNAL_POLL_S)  # no inotify: look at the file
        due = self.next_due()
        if due is not None:
            timeout = min(timeout, due)
        ready = self.poller.poll(timeout * 1000)
        self._in_step = True
        try:
            self._handle(ready)
        finally:
            self._in_step = False
        self.flush()

    def _handle(self, ready: list[tuple[int, int]]) -> None:
        journal_fd = self.journal_watch.fileno() if self.journal_watch is not None else None
        for fd, mask in ready:
            if self.kmsg is not None and fd == self.kmsg.fileno():
                self.feed_kmsg(self.kmsg.read_available())
                continue
            if fd == journal_fd and self.journal_watch is not None:
                self.journal_watch.drain()
                continue
            watch = self.by_fd.get(fd)
            if isinstance(watch, OomControlWatch):
                self.on_eventfd(watch)
            elif isinstance(watch, EventsFileWatch):
                self.on_events_file(watch)
            elif mask & (select.POLLNVAL | select.POLLERR):
                with contextlib.suppress(KeyError, ValueError):
                    self.poller.unregister(fd)
        for cg in list(self.under_oom):
            self.check_resolved(cg)
        # the journal after the kernel log: a journaled kernel kill is a duplicate
        if self.pending and self.kmsg is not None:
            self.feed_kmsg(self.kmsg.read_available())
        self.read_journal()

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        while not until():
            self.step()

    def close(self) -> None:
        self.flush(force=True)
        for cg in list(self.v1) + list(self.v2):
            self._drop(cg)
        if self.journal_watch is not None:
            self.journal_watch.close()
            self.journal_watch = None
