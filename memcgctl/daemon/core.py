"""The daemon's decisions, free of I/O: a state machine driven by ``notify`` and ``tick``.

Everything it needs from the world goes through :class:`Ports` (real: ports.py; tests: a
fake).  The victim comes from the *same* selection function ``predict-victim`` uses.

Per managed memcg (one with an OOM delay):

* **v1** (``mode = "oom"``): the port has set ``oom_kill_disable=1``, so an OOM pauses
  the memcg instead of killing.  When the memcg is under OOM we emit ``under_oom`` at
  once, then wait until it is no longer under OOM (someone freed memory or raised the
  limit: ``oom_resolved`` by userspace) or the delay expires; then we kill the policy's
  victim.  Still under OOM ``grace`` after a kill (or under OOM again within the
  grace: the victim's death freed too little): the next victim; after ``max_rounds``
  kills, kill-all of the OOM root's lowest-priority child.  v1 gives no notification
  when an OOM ends, so after a kill the core re-checks ``under_oom`` soon (2 ms,
  doubling up to 100 ms).
* **v2 / host** (``mode = "psi"``): the kernel cannot pause, so we act before it: a
  pressure notification (PSI trigger, or ``memory.events`` max) starts a pressure
  episode; when pressure keeps firing for longer than the delay we kill the victim.
  Pressure that stops for longer than ``pressure_window`` ends the episode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from memcgctl.model import Snapshot
from memcgctl.policy import Decision

Event = dict[str, Any]
Select = Callable[[Snapshot, str, Iterable[int]], Decision]


class Ports(Protocol):
    """What the core needs from the world."""

    def managed(self) -> dict[str, int]:
        """Every memcg with an OOM delay (ms), including the host ("/") if asked."""

    def take_over(self, cg: str, adopt_under_oom: bool) -> str | None:
        """Start managing cg (v1: oom_kill_disable=1 + eventfd; v2: PSI trigger).
        Returns the mode ("oom" or "psi"), or None when it cannot be managed."""

    def release(self, cg: str) -> None:
        """Stop managing cg and restore what take_over changed."""

    def under_oom(self, cg: str) -> bool:
        """v1: the memcg (or an ancestor) is under OOM right now."""

    def at_limit(self, cg: str) -> bool:
        """The memcg's own usage is at its limit (its own OOM, not an ancestor's)."""

    def snapshot(self, cg: str) -> Snapshot:
        """A fresh snapshot of cg's subtree."""

    def kill(self, decision: Decision) -> list[int]:
        """Kill the decision's victim (or its whole oom.group); the pids signalled."""

    def kill_all(self, cg: str) -> list[int]:
        """Kill every task below cg; the pids signalled."""

    def alive(self, pids: Iterable[int]) -> list[int]:
        """Those of pids that have not exited yet."""

    def emit(self, event: Event) -> None:
        """Report a decision (stderr log, journal)."""


@dataclass
class Watch:
    cg: str
    delay_ms: int
    mode: str  # "oom" (v1 pause) or "psi" (act before the kernel)
    episode_start: float | None = None  # under OOM / under pressure since
    last_signal: float | None = None  # psi: the last pressure notification
    rounds: int = 0
    last_kill: float | None = None
    killed: list[int] = field(default_factory=list)
    adopted: bool = False  # found under OOM at start: resolve at once
    # v1 has no notification when an OOM ends: after a kill, re-check soon, backing off
    next_check: float | None = None
    check_step: float = 0.0


FIRST_CHECK = 0.002  # seconds after a kill before the first "still under OOM?" check
MAX_CHECK = 0.1


@dataclass(frozen=True)
class Settings:
    grace: float = 0.5  # seconds after a kill before the next round
    max_rounds: int = 3  # victim kills before kill-all
    pressure_window: float = 2.1  # psi: silence that ends a pressure episode (> 2 PSI windows)
    dry_run: bool = False


class DaemonCore:
    def __init__(self, ports: Ports, select: Select, settings: Settings = Settings()) -> None:
        self.ports = ports
        self.select = select
        self.settings = settings
        self.watches: dict[str, Watch] = {}

    # -- the managed set ---------------------------------------------------------------
    def rescan(self, now: float, starting: bool = False) -> None:
        """Take over memcgs that got a delay, release those that lost it or vanished."""
        wanted = self.ports.managed()
        for cg in sorted(set(self.watches) - set(wanted)):
            self._release(cg, "delay cleared or cgroup removed")
        for cg, delay in sorted(wanted.items()):
            w = self.watches.get(cg)
            if w is not None:
                if w.delay_ms != delay:
                    self._emit("daemon_delay_changed", cg, delay_ms=delay, was_ms=w.delay_ms)
                    w.delay_ms = delay
                continue
            mode = self.ports.take_over(cg, adopt_under_oom=starting)
            if mode is None:
                continue
            w = Watch(cg, delay, mode)
            self.watches[cg] = w
            self._emit("daemon_took_over", cg, delay_ms=delay, mode=mode)
            if mode == "oom" and self.ports.under_oom(cg):
                # already under OOM when we arrive (e.g. after a crash): resolve at once
                w.adopted = True
                self.notify(cg, now)

    def release_all(self) -> None:
        for cg in sorted(self.watches):
            self._release(cg, "daemon stopping")

    def _release(self, cg: str, why: str) -> None:
        self.watches.pop(cg, None)
        self.ports.release(cg)
        self._emit("daemon_released", cg, reason=why)

    # -- notifications -------------------------------------------------------------------
    def notify(self, cg: str, now: float) -> None:
        """An OOM eventfd or a pressure trigger of cg fired."""
        w = self.watches.get(cg)
        if w is None:
            return
        if w.mode == "psi":
            if w.episode_start is None:
                self._begin(w, now)
                self._emit("pressure", cg, delay_ms=w.delay_ms)
            w.last_signal = now
            return
        self._check_oom(w, now)

    def _handler_for(self, cg: str) -> bool:
        """True when cg itself is the OOMing memcg we should act on: not when a managed
        ancestor is under OOM too (that watch handles the episode)."""
        parts = cg.strip("/").split("/")
        for i in range(len(parts) - 1, 0, -1):
            anc = "/" + "/".join(parts[:i])
            aw = self.watches.get(anc)
            if aw is not None and aw.mode == "oom" and aw.episode_start is not None:
                return False
        return True

    def _check_oom(self, w: Watch, now: float) -> None:
        under = self.ports.under_oom(w.cg)
        if under and w.episode_start is None:
            if not self._handler_for(w.cg):
                return
            if not w.adopted and not self.ports.at_limit(w.cg):
                # an unmanaged ancestor's OOM: the kernel kills there, not our business
                return
            self._begin(w, now)
            self._emit("under_oom", w.cg, delay_ms=w.delay_ms, adopted=w.adopted)
        elif not under and w.episode_start is not None:
            self._resolved(w, now)
        elif under and w.next_check is not None and now >= w.next_check:
            w.check_step = min(w.check_step * 2, MAX_CHECK)
            w.next_check = now + w.check_step

    def _begin(self, w: Watch, now: float) -> None:
        """Start an episode.  Within the grace after our last kill it continues that
        kill history (the victim's death freed too little: a livelock); otherwise the
        history is forgotten."""
        window = self.settings.grace
        if w.mode == "psi":
            window = max(window, self.settings.pressure_window)
        if w.last_kill is None or now - w.last_kill >= window:
            w.rounds, w.killed, w.last_kill = 0, [], None
        w.episode_start = now

    def _resolved(self, w: Watch, now: float) -> None:
        assert w.episode_start is not None
        self._emit(
            "oom_resolved",
            w.cg,
            by="daemon" if w.rounds else "userspace",
            after_ms=round((now - w.episode_start) * 1000),
            kills=w.rounds,
        )
        self._reset(w)

    @staticmethod
    def _reset(w: Watch) -> None:
        """End the episode; the kill history stays for :meth:`_begin` to judge."""
        w.episode_start = w.last_signal = w.next_check = None
        w.adopted = False

    # -- time --------------------------------------------------------------------------
    def tick(self, now: float) -> float | None:
        """Act on every episode whose time has come; return the next deadline."""
        deadlines: list[float] = []
        for w in list(self.watches.values()):
            if w.mode == "oom" and w.episode_start is not None:
                self._check_oom(w, now)
            if w.episode_start is None:
                continue
            if (
                w.mode == "psi"
                and w.last_signal is not None
                and now - w.last_signal > self.settings.pressure_window
            ):
                self._emit("pressure_ended", w.cg, kills=w.rounds)
                self._reset(w)
                continue
            if now >= self._due(w):
                self._act(w, now)
            if w.episode_start is not None:
                deadlines.append(self._due(w))
                if w.next_check is not None:
                    deadlines.append(w.next_check)
                if w.mode == "psi" and w.last_signal is not None:
                    deadlines.append(w.last_signal + self.settings.pressure_window)
        return min(deadlines) if deadlines else None

    def _due(self, w: Watch) -> float:
        assert w.episode_start is not None
        if w.adopted:
            return w.episode_start
        start = w.episode_start + w.delay_ms / 1000
        if w.last_kill is None:
            return start
        if w.mode == "oom":
            return w.last_kill + self.settings.grace  # livelock: the next victim
        return max(start, w.last_kill + self.settings.grace)

    def _act(self, w: Watch, now: float) -> None:
        # victims of earlier rounds still exiting: the kernel would wait too
        still = self.ports.alive(w.killed)
        if still and w.last_kill is not None and now - w.last_kill < 5 * self.settings.grace:
            w.last_kill = now
            return
        if w.rounds >= self.settings.max_rounds:
            self._escalate(w, now)
            return
        snap = self.ports.snapshot(w.cg)
        decision = self.select(snap, w.cg, w.killed)
        if decision.victim is None:
            self._emit("no_victim", w.cg, reasons=list(decision.reasons))
            self._escalate(w, now)
            return
        victim = decision.victim
        extra: dict[str, Any] = {
            "pid": victim.pid,
            "comm": victim.comm,
            "victim_cgroup": victim.cgroup,
            "badness": victim.badness,
            "round": w.rounds + 1,
            "waited_ms": round((now - w.episode_start) * 1000) if w.episode_start else 0,
            "reasons": list(decision.reasons),
        }
        if decision.kill_group is not None:
            extra["kill_group"] = decision.kill_group
            extra["group_pids"] = list(decision.group_pids)
        if self.settings.dry_run:
            self._emit("would_kill", w.cg, **extra)
            pids = [victim.pid]
        else:
            pids = self.ports.kill(decision)
            self._emit("daemon_kill", w.cg, killed=pids, **extra)
        self._killed(w, now, pids)

    def _killed(self, w: Watch, now: float, pids: list[int]) -> None:
        w.rounds += 1
        w.killed.extend(pids)
        w.last_kill = now
        w.check_step = FIRST_CHECK
        w.next_check = now + FIRST_CHECK
        if w.mode == "psi":
            # one kill per pressure episode; a new episode starts with new pressure
            self._reset(w)

    def _escalate(self, w: Watch, now: float) -> None:
        snap = self.ports.snapshot(w.cg)
        target = lowest_priority_child(snap, w.cg) or w.cg
        if self.settings.dry_run:
            self._emit("would_escalate", w.cg, target=target, rounds=w.rounds)
            pids: list[int] = []
        else:
            pids = self.ports.kill_all(target)
            self._emit("daemon_escalated", w.cg, target=target, killed=pids, rounds=w.rounds)
        self._killed(w, now, pids)

    def _emit(self, kind: str, cg: str, **fields: Any) -> None:
        self.ports.emit({"kind": kind, "cgroup": cg, **fields})


def lowest_priority_child(snap: Snapshot, cg: str) -> str | None:
    """The child cgroup of cg that the priority policy ranks first (lowest badness,
    then largest usage), among those with a killable process; None if none."""
    info = snap.cgroups.get(cg)
    if info is None:
        return None
    best: tuple[int, int, str] | None = None
    for child in info.children:
        c = snap.cgroups.get(child)
        if c is None or c.badness >= 1000:
            continue
        if not any(p.killable for p in snap.subtree_processes(child)):
            continue
        key = (c.badness, -(c.usage_bytes or 0), child)
        if best is None or key < best:
            best = key
    return best[2] if best else None
