"""The daemon's status file (:mod:`memcgctl.state.daemonstatus`), kept current.

:class:`StatusCore` stands between the loop and :class:`~memcgctl.daemon.core.DaemonCore`
(the loop's ``Core`` protocol): after each call that may have changed something it
rewrites the file — at once when a decision was emitted (counted by :meth:`counted`,
which wraps the ports' ``emit``), else every ``every_s`` seconds during an episode and
every :data:`IDLE_EVERY_S` outside one.  A write that fails is
reported once and never stops the daemon; a kill never waits for it (it is written
after the core has acted).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from memcgctl.daemon.core import DaemonCore, Watch
from memcgctl.render.diag import warning
from memcgctl.state.daemonstatus import remove_status, write_status
from memcgctl.state.statedir import check_state_dir
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.errors import MemcgctlError
from memcgctl.vocab.model import ProcessInfo
from memcgctl.vocab.records import DaemonRecord, utc_iso, utc_now_iso

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EVERY_S = 2.0  # during an episode (its delay_left_ms moves)
IDLE_EVERY_S = 30.0  # otherwise: only "updated" would change (a write is idle CPU)
MIN_GAP_S = 0.2  # at most this often on change (a burst of decisions is one write)


class StatusCore:
    def __init__(
        self,
        core: DaemonCore,
        state_dir: Path,
        facts: dict[str, Any],
        valves: Callable[[], dict[Scope, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        every_s: float = EVERY_S,
    ) -> None:
        self.core = core
        self.state_dir = state_dir
        self.facts = facts  # pid, instance, root, policy, dry_run, hierarchy…
        self.valves = valves
        self.clock = clock
        self.every_s = every_s
        self.counts: Counter[str] = Counter()
        self.started = utc_now_iso()
        self._dirty = True
        self._last = -1e9
        self._failed = False
        self._checked = False

    # -- the ports' emit, counted --------------------------------------------------------
    def counted(self, emit: Callable[[DaemonRecord], None]) -> Callable[[DaemonRecord], None]:
        def emit_and_count(event: DaemonRecord) -> None:
            emit(event)
            self.counts[str(event.get("kind"))] += 1
            self._dirty = True

        return emit_and_count

    # -- the Core protocol ---------------------------------------------------------------
    def rescan(self, now: float, starting: bool = False) -> None:
        self.core.rescan(now, starting)
        # what a rescan changes it reports (took over, released, delay changed: dirty);
        # a forced write per rescan was one file written every 2 s, and more in a churn
        self._maybe_write(force=starting)

    def tick(self, now: float) -> float | None:
        deadline = self.core.tick(now)
        self._maybe_write()
        if self._dirty:  # written too recently: come back for it
            soon = self.clock() + MIN_GAP_S
            deadline = soon if deadline is None else min(deadline, soon)
        return deadline

    def notify(self, cg: Scope, now: float) -> None:
        self.core.notify(cg, now)
        self._maybe_write()

    def kernel_killed(self, domain: CgroupPath, victim: ProcessInfo) -> None:
        self.core.kernel_killed(domain, victim)
        self._maybe_write()

    def fault(self, where: str, cg: Scope | None, exc: BaseException) -> None:
        self.core.fault(where, cg, exc)

    def busy(self) -> bool:
        return self.core.busy()

    def release_all(self) -> None:
        self.core.release_all()
        remove_status(self.state_dir, int(self.facts["pid"]))

    # -- the document --------------------------------------------------------------------
    def _watch(self, w: Watch, now: float, wall: float) -> dict[str, Any]:
        episode: dict[str, Any] | None = None
        if w.episode_start is not None:
            episode = {
                "since": utc_iso(wall - (now - w.episode_start)),
                "seconds": round(now - w.episode_start, 3),
                "rounds": w.rounds,
                "killed": list(w.killed),
                "frozen": w.frozen,
                "delay_left_ms": max(0, int(w.delay_ms - (now - w.episode_start) * 1000))
                if not w.rounds
                else 0,
            }
        doc: dict[str, Any] = {
            "cgroup": str(w.cg),
            "mode": w.mode.value,
            "domain": str(w.domain),
            "delay_ms": w.delay_ms,
            "episode": episode,
        }
        valve = (self.valves() if self.valves is not None else {}).get(w.cg)
        if valve is not None:
            doc["valve"] = {
                "memory_high": getattr(valve, "written", None),
                "user_high": getattr(valve, "user_high", None),
            }
        return doc

    def document(self) -> dict[str, Any]:
        now, wall = self.clock(), time.time()
        watches = [self._watch(w, now, wall) for _, w in sorted(self.core.watches.items())]
        return {
            "version": 1,
            **self.facts,
            "started": self.started,
            "updated": utc_iso(wall),
            "managed": watches,
            "episodes": sum(1 for w in watches if w["episode"] is not None),
            "counts": dict(sorted(self.counts.items())),
            "kernel_kills": self.core.kernel_kills,
            **({"agreed": self.core.agreed} if self.facts.get("dry_run") else {}),
        }

    def _maybe_write(self, force: bool = False) -> None:
        now = self.clock()
        busy = any(w.episode_start is not None for w in self.core.watches.values())
        due = now - self._last >= (self.every_s if busy else max(self.every_s, IDLE_EVERY_S))
        if not (force or due or (self._dirty and now - self._last >= MIN_GAP_S)):
            return
        self._last = now
        self._dirty = False
        try:
            if not self._checked:
                check_state_dir(self.state_dir, create=True)
                self._checked = True
            write_status(self.state_dir, int(self.facts["pid"]), self.document())
        except (OSError, RuntimeError, MemcgctlError) as exc:  # RuntimeError: a dict changed
            if not self._failed:
                self._failed = True
                warning(f"{self.state_dir}: cannot write the daemon status ({exc})")

    @staticmethod
    def facts_of(pid: int | None = None, **fields: Any) -> dict[str, Any]:
        return {"pid": pid if pid is not None else os.getpid(), **fields}
