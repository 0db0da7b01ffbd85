"""``memcgctl top``'s data: one :class:`Frame` per refresh — the memcgs under a root
(usage, limit, valve, badness, delay, OOM state with the daemon's countdown), the next
victim of each OOM domain under the chosen policy, and the recent kills.

A refresh is one snapshot of the subtree (as ``predict-victim`` takes it), one victim
selection per OOM domain (the pure ``logic`` functions), what the kernel log and the
journal gained since the last refresh, and the running daemons' status files: no
history re-read, no polling of anything else.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from memcgctl.env import Env
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.model import Snapshot
from memcgctl.vocab.structs import dataclass, field
from memcgctl.vocab.topframe import DomainVictim, Frame, Row

RECENT = 6  # kills kept
POLICIES = ("priority", "kernel")
SORTS = ("tree", "usage", "badness", "name")


@dataclass
class TopModel:
    env: Env
    root: CgroupPath
    policy: str = "priority"
    sort: str = "tree"
    kills: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    _follower: Any = None
    _reader: Any = None
    _tail: Any = None

    def open(self) -> None:
        """Start reading the kernel log and the journal: what is already there counts
        as recent (the last few kills under the root)."""
        from memcgctl.logic.events import matches
        from memcgctl.state.journal import Journal
        from memcgctl.state.journallines import JournalTail
        from memcgctl.watch.follower import Follower
        from memcgctl.watch.history import open_kmsg

        self._reader = open_kmsg(self.env, quiet=True)
        self._follower = Follower(
            self.env.fs,
            self.root,
            self._reader,
            self.env.proc.boot_time(),
            self.env.proc.boot_id(),
            emit=lambda ev: None,
        )
        journal = Journal(self.env.state_dir)
        history = list(journal.read()) if self.env.state_dir.is_dir() else []
        self._tail = JournalTail(journal)
        self._add([*self._kernel(), *history], lambda ev: matches(ev, self.root, None))

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def _kernel(self) -> list[dict[str, Any]]:
        if self._reader is None or self._follower is None:
            return []
        return [
            dict(e) for e in self._follower.feed_kmsg(self._reader.read_available(), live=False)
        ]

    def _add(self, events: list[Any], keep: Any) -> None:
        kinds = {"oom_kill", "user_kill", "manual_kill"}
        new = [e for e in events if e.get("kind") in kinds and keep(e)]
        for ev in sorted(new, key=lambda e: str(e.get("time", ""))):
            self.kills.append(ev)

    def refresh(self) -> Frame:
        from memcgctl.logic.events import matches

        if self._follower is not None:
            journal = list(self._tail.read_new()) if self._tail is not None else []
            self._add([*self._kernel(), *journal], lambda ev: matches(ev, self.root, None))
        snap = self.env.snapshot(self.root, with_processes=True)
        running = self._daemons()
        rows = self._rows(snap, running)
        return Frame(
            self.root,
            self.policy,
            self.sort,
            rows,
            self._victims(snap),
            list(self.kills),
            len(running),
            len(snap.processes),
        )

    def _daemons(self) -> list[dict[str, Any]]:
        try:
            return self.env.running_daemons(self.env.state_dir)
        except OSError:
            return []

    def _rows(self, snap: Snapshot, daemons: list[dict[str, Any]]) -> list[Row]:
        managed: dict[str, dict[str, Any]] = {}
        for doc in daemons:
            for w in doc.get("managed") or []:
                if isinstance(w, dict):
                    managed[str(w.get("domain"))] = w
                    managed.setdefault(str(w.get("cgroup")), w)
        rows = []
        for cg in snap.walk(self.root):
            w = managed.get(cg.path)
            valve = (w.get("valve") or {}).get("memory_high") if w else None
            episode = w.get("episode") if w else None
            depth = cg.path.depth - self.root.depth
            rows.append(Row(cg, depth, valve if isinstance(valve, int) else None, episode))
        if self.sort == "usage":
            rows.sort(key=lambda r: -(r.cg.usage_bytes or 0))
        elif self.sort == "badness":
            rows.sort(key=lambda r: (r.cg.badness, -(r.cg.usage_bytes or 0)))
        elif self.sort == "name":
            rows.sort(key=lambda r: r.cg.path)
        return rows

    def domains(self, snap: Snapshot) -> list[CgroupPath]:
        """The OOM domains under the root: the root itself (the host, for /) and every
        memcg with a limit of its own."""
        out = [self.root]
        out += [cg.path for cg in snap.walk(self.root) if cg.path != self.root and cg.limit_bytes]
        return out

    def _victims(self, snap: Snapshot) -> list[DomainVictim]:
        from memcgctl.logic.kernelheuristic import select_kernel
        from memcgctl.logic.priority import select_priority

        params = None
        out = []
        for domain in self.domains(snap):
            if self.policy == "kernel":
                if params is None:
                    from memcgctl.snapshot import kernel_params

                    params = kernel_params(self.env.proc, snap)
                d = select_kernel(snap, domain, params)
            else:
                d = select_priority(snap, domain)
            cg = snap.cgroups.get(domain)
            out.append(DomainVictim(domain, cg.limit_bytes if cg else None, d.victim, d.kill_group))
        return out

    def next_policy(self) -> None:
        self.policy = POLICIES[(POLICIES.index(self.policy) + 1) % len(POLICIES)]

    def next_sort(self) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
