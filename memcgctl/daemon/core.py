"""The daemon's decisions, free of I/O: a state machine driven by ``notify`` and ``tick``.

Everything it needs from the world goes through :class:`~memcgctl.daemon.protocol.CorePorts`
(real: ports.py; tests: a fake).  The victim comes from the *same* selection function
``predict-victim`` uses.

Every managed memcg (one with an OOM delay), and the host with ``--host-delay``, is a
:class:`Watch` in one of three modes (:class:`~memcgctl.daemon.protocol.Mode`).  The
ports report its :class:`~memcgctl.daemon.valve.OomLevel`: ``clear``, ``recovered``,
``short`` (out of memory, as far as userspace may let it get) or ``critical``:

* **v1** (``oom``): the port has set ``oom_kill_disable=1``, so an OOM pauses the memcg;
  ``short`` means under OOM.
* **v2** (``valve``): the port holds the memcg's OOM domain back with ``memory.high``
  below ``memory.max``; ``short`` means committed memory reached the valve, ``critical``
  that throttling is being outrun: the domain is frozen until the victim has died.
* **host** (``host``): ``MemAvailable`` (+ swap) against shares of RAM, polled
  adaptively; ``critical`` cuts the delay short — the host cannot be paused.

An episode starts at ``short``: emit ``under_oom`` at once, then wait until the level
falls back (a job manager freed memory or raised the limit: ``oom_resolved`` by
userspace) or the delay expires; then kill the policy's victim.  Still short ``grace``
after a kill (the victim freed too little): the next victim; after ``max_rounds``
kills, kill-all of the OOM root's lowest-priority child.  Nothing whose effective
badness is 1000 dies, escalation included: a kill-all target holding such a process
is killed process by process around it (no victim at all: nothing is killed, the
domain stays held for userspace at the valve, thawed, said once per episode).  Escalation belongs to one
continuous episode: once the domain has *recovered* (fallen well below the valve) a new
OOM starts at round 1.  Watches are re-checked at the poll interval the ports ask for,
and after a kill at 2 ms, doubling up to 100 ms, until recovery or the grace has passed.
Right after a kill's signal the core keeps quiet: the watch is not looked at until the
victim has exited (its pidfd fires: the loop wakes) or ``QUIET_S`` has passed (then its
memory is reaped from here and the looks resume), and the kill's records are held back
until it has exited or ``HOLD_S`` has passed, so that the victim's exit gets the CPU;
held records are written in order, also when stopping.

The victim is chosen ahead, so that at the deadline the kill is only a signal: with a
delay, just before the deadline; with delay 0, as a *standing plan* kept while the ports
read the watch as ``near`` its line (:class:`~memcgctl.daemon.choosing.Chooser`).  When
an episode begins with a plan that still holds, the signal goes before ``under_oom``
and ``daemon_kill`` are written; otherwise the victim is chosen afresh, by the same
selection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from memcgctl.daemon.choosing import Chooser, Select
from memcgctl.daemon.hooks import Hooks
from memcgctl.daemon.protocol import CorePorts, Mode, Reading
from memcgctl.daemon.valve import CRITICAL, RECOVERED, SHORT
from memcgctl.logic.decision import PRIORITY, Decision
from memcgctl.logic.priority import lowest_priority_child, protected_pids
from memcgctl.render.diag import diagnostic
from memcgctl.render.reasontext import reason_lines
from memcgctl.vocab import structs
from memcgctl.vocab.cgpath import CgroupPath, HostScope, Scope
from memcgctl.vocab.model import ProcessInfo, Snapshot
from memcgctl.vocab.records import daemon_record, utc_iso
from memcgctl.vocab.structs import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@dataclass
class Watch:
    cg: Scope
    delay_ms: int
    mode: Mode
    domain: CgroupPath  # where victims are chosen
    episode_start: float | None = None  # short since
    rounds: int = 0
    last_kill: float | None = None
    killed: list[int] = field(default_factory=list)
    recovered: bool = True  # seen recovered since the last kill
    adopted: bool = False  # found out of memory at start: act at once
    cut_short: bool = False  # host: critical, the delay no longer applies
    frozen: bool = False  # v2: the domain is frozen by us
    freeze_failed: bool = False  # v2: freezing was refused in this episode: not again
    next_check: float | None = None
    check_step: float = 0.0
    # the victim chosen ahead: just before the deadline, or (a standing plan) while
    # near the short line when the delay is shorter than a choice takes
    plan: Decision | None = None
    plan_at: float = 0.0  # when it was chosen
    plan_stamp: Hashable | None = None  # a standing plan: what it rests on (ports)
    plan_until: float = 0.0  # a standing plan: used no later than this
    near: bool = False  # the last reading: near the short line
    next_refresh: float = 0.0  # a standing plan: not chosen again before this
    poll_s: float = 0.0  # the last poll interval the ports asked for (the host's)
    said_stuck: bool = False  # nothing killable was reported in this episode
    # right after a signal: no look taken until the victims exited or this time has
    # come, and no records written until they exited or hold_until (the victim's exit
    # needs the CPU, not us)
    quiet_until: float | None = None
    hold_until: float | None = None
    quiet_pids: list[int] = field(default_factory=list)


QUARANTINE_S = 30.0  # a memcg that raised an unexpected error is left alone this long
FIRST_CHECK = 0.002  # seconds after a kill before the first "still short?" check
# after a kill's signal: the records and the first look wait until the victim exited,
# this long at most (measured in the v2 guest, issue 22: writing them at once cost the
# exiting victim 10-30 ms of CPU on 2 vCPUs; a bare handler just sleeps on the pidfd)
QUIET_S = 0.005
# ... and the records (log lines, the journal: ~15 ms of the daemon's CPU there) wait for
# the exit this long at most: in the guest a 40 MiB victim's exit took 5-13 ms (the bare
# handler's), so at QUIET_S they were often written while it still exited (issue 22,
# sixth pass); the looks (the freeze line) and the reaping still resume at QUIET_S
HOLD_S = 0.1
MAX_CHECK = 0.1
_SOURCE = {Mode.OOM: "memory.oom_control", Mode.VALVE: "memory.events", Mode.HOST: "meminfo"}


@dataclass(frozen=True)
class Settings:
    grace: float = 0.5  # seconds after a kill before the next round
    max_rounds: int = 3  # victim kills before kill-all
    dry_run: bool = False


class DaemonCore:
    def __init__(
        self,
        ports: CorePorts,
        select: Select,
        settings: Settings | None = None,
        clock: Callable[[], float] | None = None,
        hooks: Hooks | None = None,
        debug: Callable[[str, Scope, dict[str, Any]], None] | None = None,
    ) -> None:
        self.ports = ports
        # a debug line per planned kill, written with its records: the event to the
        # signal by step (the level read, the plan's check, the signal); the clock's
        self.debug = debug if clock is not None else None
        self._path: tuple[Scope, float, float, float] | None = None
        self._signalled = 0.0
        self._exited: float | None = None  # the killed victim's exit seen (kill_path)
        self._reaped = False
        self.hooks = hooks  # --pre-kill / --post-kill (hooks.py); never waited for
        # choosing the victim ahead of the deadline, and late_ms; None: neither
        self.clock = clock
        self.chooser = Chooser(ports, select, clock)  # the victim, now or ahead
        self.settings = settings if settings is not None else Settings()
        self.watches: dict[Scope, Watch] = {}
        self.kernel_kills = 0  # kernel OOM kills seen in our root (shadow: OOM episodes)
        self.agreed = 0  # shadow mode: of those, where the policy would have killed the same
        self._quarantine: dict[Scope, float] = {}  # memcg -> left to the kernel until

    # -- the managed set ---------------------------------------------------------------
    def rescan(self, now: float, starting: bool = False) -> None:
        """Take over memcgs that got a delay, release those that lost it or vanished.
        An unexpected error with one memcg is reported and that memcg left to the
        kernel for a while (:meth:`_isolate`); the others are still handled."""
        try:
            wanted = self.ports.managed()
        except Exception as exc:  # the rescan failed as a whole: keep what we have
            self.fault("rescan", None, exc)
            return
        if self.clock is not None:  # the walk took time, and may have acted meanwhile
            now = max(now, self.clock())
        for cg in sorted(set(self.watches) - set(wanted)):
            try:
                self._release(cg, "delay cleared or cgroup removed")
            except Exception as exc:
                self.watches.pop(cg, None)
                self.fault("release", cg, exc)
        for cg, delay in sorted(wanted.items()):
            if self._quarantine.get(cg, 0.0) > now:
                continue
            try:
                self._rescan_one(cg, delay, now, starting)
            except Exception as exc:
                self._isolate(cg, now, "take_over", exc)

    def _rescan_one(self, cg: Scope, delay: int, now: float, starting: bool) -> None:
        w = self.watches.get(cg)
        if w is not None:
            if w.delay_ms != delay:
                self._emit("daemon_delay_changed", cg, delay_ms=delay, was_ms=w.delay_ms)
                w.delay_ms = delay
            # Look at it now and then between notifications too: no event tells us that
            # someone (systemd applying MemoryHigh=/MemoryMax=) rewrote memory.high, and
            # a valve gone until the next OOM is no valve.
            self._arm(w)
            self._check(w, now)
            return
        m = self.ports.take_over(cg)
        if m is None:
            return
        w = Watch(cg, delay, m.mode, m.domain)
        self.watches[cg] = w
        extra = {"domain": m.domain} if m.domain != cg else {}
        self._emit("daemon_took_over", cg, delay_ms=delay, mode=m.mode.value, **extra)
        self._arm(w)
        # already out of memory when we arrive (e.g. after a crash): act at once
        self._check(w, now, adopt=starting)

    def _arm(self, w: Watch) -> None:
        """v2: a watch whose victim is chosen ahead (delay 0) has its valve step down
        while far from it, so that the kernel's high event says "near" (valve.py)."""
        if w.mode is Mode.VALVE:
            self.ports.arm_near(w.cg, self.chooser.plans_ahead(w))

    # -- faults ------------------------------------------------------------------------
    def fault(self, where: str, cg: Scope | None, exc: BaseException) -> None:
        """Report an unexpected error (a bug, or the world in a state we did not
        foresee) as a ``daemon_error`` record; never raises."""
        error = f"{type(exc).__name__}: {exc}"[:500]
        try:
            self.ports.emit(daemon_record("daemon_error", str(cg or "-"), where=where, error=error))
        except Exception:  # the report itself failed: one plain line, and carry on
            diagnostic(f"daemon_error where={where} cgroup={cg} error={error}")

    def _isolate(self, cg: Scope, now: float, where: str, exc: BaseException) -> None:
        """An unexpected error while handling ``cg``: report it, hand cg back to the
        kernel (release: its OOM killer acts again, nothing stays paused) and leave it
        alone for :data:`QUARANTINE_S`; every other memcg is still handled."""
        self.fault(where, cg, exc)
        self._quarantine[cg] = now + QUARANTINE_S
        if cg in self.watches:
            try:
                self._release(cg, "internal error")
            except Exception as exc2:
                self.watches.pop(cg, None)
                self.fault("release", cg, exc2)

    def release_all(self) -> None:
        self.release_watches("daemon stopping")
        if self.hooks is not None:
            self.hooks.close()

    def release_watches(self, why: str) -> None:
        """Release every managed memcg (the daemon goes on: it may take them again)."""
        self._settle(0.0, stopping=True)  # what a kill held back comes first
        for cg in sorted(self.watches):
            self._release(cg, why)

    def _release(self, cg: Scope, why: str) -> None:
        w = self.watches.pop(cg, None)
        if w is not None and w.frozen:
            self.ports.freeze(cg, False)
        self.ports.release(cg)
        self._emit("daemon_released", cg, reason=why)

    def busy(self) -> bool:
        """An episode is under way somewhere (until ``oom_resolved``): the loop holds
        whole-tree walks back meanwhile."""
        return any(w.episode_start is not None for w in self.watches.values())

    # -- notifications -------------------------------------------------------------------
    def notify(self, cg: Scope, now: float) -> None:
        """A notification about cg fired (v1 eventfd, memory.events, PSI)."""
        w = self.watches.get(cg)
        if w is not None and w.quiet_until is None:  # quiet: looked at when it ends
            try:
                self._check(w, now)
            except Exception as exc:
                self._isolate(cg, now, "notify", exc)

    def _handler_for(self, cg: Scope) -> bool:
        """True when cg itself is the OOMing memcg we should act on: not when a managed
        ancestor (below the root) is out of memory too (that watch handles the episode)."""
        if isinstance(cg, HostScope):
            return True
        for anc in cg.ancestors()[:-1]:
            aw = self.watches.get(anc)
            if aw is not None and aw.mode is Mode.OOM and aw.episode_start is not None:
                return False
        return True

    def _check(self, w: Watch, now: float, adopt: bool = False) -> None:
        level = self.ports.level(w.cg)
        looked = self.clock() if self.debug is not None and self.clock is not None else 0.0
        short = level.state in (SHORT, CRITICAL)
        w.near = short or level.near
        if not w.near and w.plan_stamp is not None and w.episode_start is None:
            w.plan, w.plan_stamp = None, None  # far from the line again: no plan kept
        if level.state == RECOVERED and not w.recovered:
            w.recovered = True
        if short and w.episode_start is None:
            if not self._handler_for(w.cg):
                return
            if w.mode is Mode.OOM and not adopt and not self.ports.at_limit(w.cg):
                return  # an unmanaged ancestor's OOM: the kernel kills there
            self._begin(w, now, adopt)
            under: dict[str, Any] = {
                "delay_ms": w.delay_ms,
                "adopted": adopt,
                "source": _SOURCE[w.mode],
                **({"domain": w.domain} if w.domain != w.cg else {}),
            }
            planned = self.chooser.take(w, now) if self._signal_first(w, now) else None
            if planned is not None:
                # the standing plan holds: the signal first, the records after it
                # (under_oom carries the episode's start as its time, formatted then)
                assert self.clock is not None
                checked = self.clock()
                under["time"] = time.time() - max(checked - now, 0.0)
                if self.debug is not None:  # the event to the signal (and exit), by step
                    self._path = (w.cg, now, looked, checked)
                    self._signalled, self._exited, self._reaped = checked, None, False
                self._act(w, now, under=under, planned=planned)
            else:
                self._emit("under_oom", w.cg, **under)
        elif not short and w.episode_start is not None:
            self._resolved(w, now)
        if level.state == CRITICAL and w.episode_start is not None:
            self._critical(w)
        elif level.state != CRITICAL and w.frozen and (w.episode_start is None or w.rounds):
            # thaw once the victim's death took the domain off the critical line
            self._thaw(w)
        self._schedule(w, now, level)

    def _critical(self, w: Watch) -> None:
        if w.mode is Mode.HOST:
            if not w.cut_short:
                w.cut_short = True
                self._emit("delay_cut_short", w.cg, reason="MemAvailable below the critical line")
            return
        if w.frozen or w.freeze_failed or self.settings.dry_run:
            return
        if self.ports.freeze(w.cg, True):
            w.frozen = True
            self._emit("valve_frozen", w.cg, domain=w.domain)
        else:
            w.freeze_failed = True

    def _thaw(self, w: Watch) -> None:
        if self.ports.freeze(w.cg, False):
            self._emit("valve_thawed", w.cg, domain=w.domain)
        w.frozen = False

    def _schedule(self, w: Watch, now: float, level: Reading) -> None:
        """When to look again: as the ports ask, and after a kill soon (backing off)
        until the domain recovered or the grace has passed."""
        steps = []
        w.poll_s = level.poll or 0.0
        if level.poll is not None and (w.episode_start is not None or w.mode is Mode.HOST):
            steps.append(level.poll)
        recent = w.last_kill is not None and now - w.last_kill < self.settings.grace
        if not w.recovered and (recent or w.episode_start is not None):
            w.check_step = min(max(w.check_step * 2, FIRST_CHECK), MAX_CHECK)
            steps.append(w.check_step)
        if w.episode_start is None and level.soon is not None and self.chooser.plans_ahead(w):
            steps.append(level.soon)  # growing towards the near line: look before it
        if self.chooser.keeps_plan(w) and (w.mode is not Mode.HOST or level.poll is None):
            # near the line with no poll of its own (a memcg): look again, and choose
            # again, when the refresh is due; the host's polls carry its refreshes
            steps.append(max(w.next_refresh - now, 0.0))
        w.next_check = now + min(steps) if steps else None

    def _begin(self, w: Watch, now: float, adopt: bool) -> None:
        """Start an episode.  Within the grace after our last kill, and unless the
        domain recovered since, it continues that kill history (the victim freed too
        little: a livelock); otherwise the history is forgotten."""
        if w.last_kill is None or w.recovered or now - w.last_kill >= self.settings.grace:
            w.rounds, w.killed, w.last_kill = 0, [], None
        w.episode_start = now
        w.adopted = adopt
        w.cut_short = w.freeze_failed = w.said_stuck = False

    def _resolved(self, w: Watch, now: float) -> None:
        assert w.episode_start is not None
        self._emit(
            "oom_resolved",
            w.cg,
            by="daemon" if w.rounds else "userspace",
            after_ms=round((now - w.episode_start) * 1000),
            kills=w.rounds,
        )
        w.episode_start = None
        w.plan, w.plan_stamp = None, None
        w.adopted = w.cut_short = False
        if w.frozen:
            self._thaw(w)

    # -- time --------------------------------------------------------------------------
    def tick(self, now: float) -> float | None:
        """Act on every episode whose time has come; return the next deadline."""
        deadlines: list[float] = []
        self._settle(now)
        for w in list(self.watches.values()):
            try:
                self._tick_one(w, now, deadlines)
            except Exception as exc:
                self._isolate(w.cg, now, "tick", exc)
        self._settle(now)  # a kill that failed midway holds nothing back
        if self.hooks is not None:
            hook_due = self.hooks.reap()
            if hook_due is not None:
                deadlines.append(hook_due)
        return min(deadlines) if deadlines else None

    def _tick_one(self, w: Watch, now: float, deadlines: list[float]) -> None:
        if w.hold_until is not None:
            deadlines.append(w.hold_until)  # or the victim's exit wakes the loop
        if w.quiet_until is not None:
            deadlines.append(w.quiet_until)  # (the same)
            return
        due_check = w.next_check is not None and now >= w.next_check
        if due_check or w.episode_start is not None:
            self._check(w, now)
        if w.episode_start is not None and now >= self._due(w):
            self._act(w, now)
        elif self.chooser.keeps_plan(w):
            if now >= w.next_refresh:
                self.chooser.refresh(w, now)
        elif w.episode_start is not None and w.plan is None and now >= self._prep_at(w):
            w.plan = self.chooser.decide(w)
            if self.hooks is not None and not self.settings.dry_run:
                self.hooks.chosen(w.cg, w.plan, self._due(w))
        if w.episode_start is not None:
            deadlines.append(self._due(w))
            if w.plan is None and self.clock is not None:
                deadlines.append(self._prep_at(w))
        if w.next_check is not None:
            deadlines.append(w.next_check)

    def _due(self, w: Watch) -> float:
        assert w.episode_start is not None
        if w.last_kill is not None:
            return w.last_kill + self.settings.grace  # still short: the next victim
        if w.adopted or w.cut_short:
            return w.episode_start
        return w.episode_start + w.delay_ms / 1000

    def _prep_at(self, w: Watch) -> float:
        """When to choose the victim ahead of the deadline: twice the time the last
        choice took before it (5 ms - 0.5 s), so the kill itself is only a signal."""
        if self.clock is None:
            return float("inf")
        lead = self.hooks.lead_s if self.hooks is not None else 0.0  # the pre-kill hook's
        return self._due(w) - max(self.chooser.lead(), lead)

    # -- the standing plan (daemon/choosing.py keeps it) ---------------------------------
    def _signal_first(self, w: Watch, now: float) -> bool:
        """The episode that just began is due now and has a standing plan: act at once,
        the signal before the records (not with a pre-kill hook, whose records come
        first)."""
        return (
            w.plan_stamp is not None
            and w.rounds == 0
            and self._due(w) <= now
            and (self.hooks is None or not self.hooks.pre)
        )

    def _act(
        self,
        w: Watch,
        now: float,
        under: dict[str, Any] | None = None,
        planned: tuple[Decision, float] | None = None,
    ) -> None:
        """Kill the victim (a plan that still holds, or one chosen now).  ``under``: the
        episode's ``under_oom``, held back until the signal has gone (signal first)."""
        # victims of earlier rounds still exiting: the kernel would wait too
        still = self.ports.alive(w.killed) if w.killed else []
        if still and w.last_kill is not None and now - w.last_kill < 5 * self.settings.grace:
            w.last_kill = now
            return
        if w.rounds >= self.settings.max_rounds:
            self._escalate(w, now)
            return
        if planned is None:
            planned = self.chooser.take(w, now)
        decision, age = planned if planned is not None else (None, None)
        late = None
        for attempt in range(2):
            if decision is None:
                decision, age = self.chooser.decide(w), None
            if decision.victim is None:
                self._say_under(w, under)
                if not w.said_stuck:
                    self._emit("no_victim", w.cg, reasons=reason_lines(decision.reasons))
                self._escalate(w, now)
                return
            if self.settings.dry_run:
                self._say_under(w, under)
                self._emit("would_kill", w.cg, **self._kill_fields(w, now, decision))
                self._killed(w, now, [decision.victim.pid])
                return
            if self.hooks is not None:
                self.hooks.killing(w.cg, decision)  # a late pre-kill hook is stopped
            self.ports.hold_records(True)  # written once the victim exited (_settle)
            pids = self._kill(w, decision)
            if self.clock is not None:  # the deadline to the signal
                self._signalled = self.clock()
                late = round((self._signalled - self._due(w)) * 1000, 1)
            self._say_under(w, under)
            under = None
            if self.hooks is not None:
                self.hooks.killed(w.cg, decision, pids)
            if pids or attempt:
                break
            decision = None  # the victim left between the choice and the signal
        assert decision is not None
        fields = self._kill_fields(w, now, decision)
        if late is not None:  # from the deadline to the signal, for the bench
            fields["late_ms"] = late
        if age is not None:  # the victim was chosen ahead, this long before
            fields["plan_age_ms"] = round(age, 1)
        self._emit("daemon_kill", w.cg, killed=pids, **fields)
        self._killed(w, now, pids)
        # counted from the signal: ``now`` is the loop's time before the look and the
        # plan's check, 3-8 ms earlier in the guest, where it had left the victim ~2 ms
        sent = self._signalled if late is not None else now
        w.quiet_until, w.hold_until, w.quiet_pids = sent + QUIET_S, sent + HOLD_S, pids
        w.next_check = w.quiet_until
        self._settle(now)  # nothing signalled: written at once

    def _settle(self, now: float, stopping: bool = False) -> None:
        """End the quiet after a kill where its victims exited or its time has come
        (all of them when ``stopping``): the ended ones are looked at now.  Once no
        watch holds records back (victims exited, or ``HOLD_S`` passed), the records
        held meanwhile are written, in order."""
        holding = False
        for w in self.watches.values():
            if w.hold_until is None:
                continue
            if stopping or self.ports.exited(w.quiet_pids):
                if w.quiet_until is not None:
                    w.next_check = now
                if not stopping and self._path is not None and self._path[0] == w.cg:
                    # (the clock: ``now`` may be the event's, from before the signal)
                    self._exited = self.clock() if self.clock is not None else now
                w.quiet_until, w.hold_until, w.quiet_pids = None, None, []
                continue
            if w.quiet_until is not None and now >= w.quiet_until:
                # not exited yet (stuck in the kernel?): its memory is reaped from here,
                # and the watch looked at again (the freeze line)
                self.ports.reap(w.quiet_pids)
                w.quiet_until = None
                w.next_check = now
                if self._path is not None and self._path[0] == w.cg:
                    self._reaped = True
            if now >= w.hold_until:
                w.hold_until, w.quiet_pids = None, []
            else:
                holding = True
        if not holding:
            self.ports.hold_records(False)
            if self._path is not None and self.debug is not None:
                cg, event, looked, checked = self._path
                self._path = None
                fields = {
                    "level_ms": round((looked - event) * 1000, 2),
                    "check_ms": round((checked - looked) * 1000, 2),
                    "signal_ms": round((self._signalled - checked) * 1000, 2),
                    # the signal to the exit as the loop saw it (its pidfd), or none
                    # within HOLD_S; whether it was reaped at QUIET_S first
                    "exit_ms": None
                    if self._exited is None
                    else round((self._exited - self._signalled) * 1000, 2),
                    "reaped": self._reaped,
                }
                self.debug("kill_path", cg, fields)

    def _say_under(self, w: Watch, under: dict[str, Any] | None) -> None:
        if under is not None:
            if isinstance(under.get("time"), float):  # the start, as a time string now
                under["time"] = utc_iso(under["time"])
            self._emit("under_oom", w.cg, **under)

    def _kill(self, w: Watch, decision: Decision) -> list[int]:
        """The victim, or its memory.oom.group: a group holding a process whose
        effective badness is 1000 dies process by process around it (a group kill
        would take it too)."""
        group = decision.kill_group
        if group is None:
            return self.ports.kill(decision)
        snap = self.ports.snapshot(group)
        spared = protected_pids(snap, group)
        if not spared:
            return self.ports.kill(decision)
        pids: list[int] = []
        for p in snap.subtree_processes(group):
            if p.killable and p.pid not in spared:
                pids += self.ports.kill(Decision(PRIORITY, w.domain, p))
        return pids

    @staticmethod
    def _kill_fields(w: Watch, now: float, decision: Decision) -> dict[str, Any]:
        victim = decision.victim
        assert victim is not None
        fields: dict[str, Any] = {
            "pid": victim.pid,
            "comm": victim.comm,
            "victim_cgroup": victim.cgroup,
            "badness": victim.badness,
            "badness_source": victim.badness_source,
            "badness_from": victim.badness_from,
            "round": w.rounds + 1,
            "waited_ms": round((now - w.episode_start) * 1000) if w.episode_start else 0,
            "reasons": reason_lines(decision.reasons),
        }
        if decision.kill_group is not None:
            fields["kill_group"] = decision.kill_group
            fields["group_pids"] = list(decision.group_pids)
        return fields

    def _killed(self, w: Watch, now: float, pids: list[int]) -> None:
        w.plan, w.plan_stamp = None, None
        w.rounds += 1
        w.killed.extend(pids)
        w.last_kill = now
        w.recovered = False
        w.check_step = 0.0
        w.next_check = now + FIRST_CHECK

    def _escalate(self, w: Watch, now: float) -> None:
        snap = self.ports.snapshot(w.domain)
        target = lowest_priority_child(snap, w.domain) or w.domain
        spared = protected_pids(snap, target)
        extra: dict[str, Any] = {"spared": sorted(spared)} if spared else {}
        if self.settings.dry_run:
            self._emit("would_escalate", w.cg, target=target, rounds=w.rounds, **extra)
            pids: list[int] = []
        elif not spared:
            pids = self.ports.kill_all(target)
            self._emit("daemon_escalated", w.cg, target=target, killed=pids, rounds=w.rounds)
        else:
            # a whole-subtree kill would take the never-kill processes too: one by one
            pids = []
            for p in snap.subtree_processes(target):
                if p.killable and p.pid not in spared:
                    pids += self.ports.kill(Decision(PRIORITY, target, p))
            if pids or not w.said_stuck:
                self._emit(
                    "daemon_escalated", w.cg, target=target, killed=pids, rounds=w.rounds, **extra
                )
            w.said_stuck = not pids
            if w.said_stuck and w.frozen:
                # the freeze only bridges the time until a victim dies: with none,
                # thaw, and do not freeze again in this episode
                self._thaw(w)
                w.freeze_failed = True
        self._killed(w, now, pids)

    # -- the kernel's own kills ---------------------------------------------------------
    def kernel_killed(self, domain: CgroupPath, victim: ProcessInfo) -> None:
        """The kernel log says the kernel killed ``victim`` in an OOM of ``domain``.
        Live, that is a kill the daemon did not prevent; in shadow mode (dry run) it is
        compared with the policy's choice in the same world (the victim put back)."""
        self.kernel_kills += 1
        fields: dict[str, Any] = {
            "pid": victim.pid,
            "comm": victim.comm,
            "victim_cgroup": victim.cgroup,
        }
        if not self.settings.dry_run:
            self._emit("kernel_kill", domain, **fields)
            return
        decision = self.chooser.select(
            with_process(self.ports.snapshot(domain), victim), domain, ()
        )
        pv = decision.victim
        agree = pv is not None and (pv.pid == victim.pid or victim.pid in decision.group_pids)
        self.agreed += agree
        if pv is not None:
            self._emit(
                "would_kill",
                domain,
                pid=pv.pid,
                comm=pv.comm,
                victim_cgroup=pv.cgroup,
                badness=pv.badness,
                badness_source=pv.badness_source,
                badness_from=pv.badness_from,
                reasons=reason_lines(decision.reasons),
            )
        self._emit(
            "kernel_kill", domain, **fields, would_kill_pid=pv.pid if pv else None, agree=agree
        )

    def _emit(self, kind: str, cg: Scope, **fields: Any) -> None:
        self.ports.emit(daemon_record(kind, cg, **fields))


def with_process(snap: Snapshot, p: ProcessInfo) -> Snapshot:
    """snap plus a process that is no longer there (the kernel's victim, for shadow
    mode), in its cgroup when the snapshot has it."""
    cg = snap.cgroups.get(p.cgroup)
    there = snap.processes.get(p.pid)
    if cg is None or (there is not None and there.killable):
        return snap  # outside the snapshot, or still alive and counted as it is
    cgroups = dict(snap.cgroups)
    if p.pid not in cg.pids:  # a zombie is listed already; a reaped victim is not
        cgroups[p.cgroup] = structs.replace(cg, pids=(*cg.pids, p.pid))
    # (no emptiness probe: it reads the cgroup as it is now, without the victim)
    processes = {**snap.processes, p.pid: p}
    return structs.replace(snap, cgroups=cgroups, processes=processes, empty_probe=None)
