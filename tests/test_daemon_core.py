"""The daemon core driven by ``tick`` with fake ports on fixture trees."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, cast

import pytest

from memcgctl.daemon.core import (
    DaemonCore,
    Settings,
    with_process,
)
from memcgctl.daemon.ports import procs_stamp, stamp_holds
from memcgctl.daemon.protocol import Managed, Mode, Reading
from memcgctl.daemon.valve import CLEAR, CRITICAL, RECOVERED, SHORT, OomLevel
from memcgctl.logic.decision import Decision
from memcgctl.logic.priority import lowest_priority_child, plan_inputs, select_priority
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.model import Snapshot
from memcgctl.vocab.records import DaemonRecord
from tests.fakehost import FakeHost


class FakePorts:
    def __init__(self, host: FakeHost, delays: dict[str, int], mode: Mode = Mode.OOM) -> None:
        self.host = host
        self.delays = dict(delays)
        self.mode = mode
        self.oom: set[str] = set()
        self.state: dict[str, OomLevel] = {}  # level while in self.oom (default SHORT)
        self.recovered: set[str] = set()
        self.frozen: list[tuple[str, bool]] = []
        self.not_at_limit: set[str] = set()
        self.taken: list[str] = []
        self.released: list[str] = []
        self.killed: list[int] = []
        self.killed_all: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.dead: set[int] = set()
        self.refuse: set[str] = set()
        self.near: set[str] = set()  # near the short line (not short)
        self.tree_mark = 0  # the tree watch's mark (a test moves it: a change seen)
        self.stamps = 0  # plan_stamp calls
        self.armed: dict[Scope, bool] = {}  # v2: the valve's lower step wanted (arm_near)
        # victims exit only once in ``dead`` (their pidfd fires then); off: at once
        self.slow_exit = False
        self.held: list[dict[str, Any]] | None = None  # records held back (hold_records)
        self.exit_asks = 0  # exited() calls
        self.reaped: list[int] = []  # victims whose memory was reaped (reap)

    def plan_stamp(self, decision: Decision) -> Hashable | None:
        self.stamps += 1
        inputs = plan_inputs(decision)
        procs = procs_stamp(self.host.env().fs, inputs) if inputs else None
        return None if procs is None else (self.tree_mark, procs)

    def plan_holds(self, decision: Decision, stamp: Hashable) -> bool:
        now = self.plan_stamp(decision)
        return now is not None and stamp_holds(self.host.env().proc, decision, stamp, now)

    def managed(self) -> dict[Scope, int]:
        return {CgroupPath(cg): delay for cg, delay in self.delays.items()}

    def take_over(self, cg: Scope) -> Managed | None:
        if cg in self.refuse:
            return None
        self.taken.append(cg)
        return Managed(self.mode, CgroupPath(cg))

    def release(self, cg: Scope) -> None:
        self.released.append(cg)

    def level(self, cg: Scope) -> Reading:
        if cg in self.oom:
            return Reading(self.state.get(cg, SHORT), 0.01 if self.mode is not Mode.OOM else None)
        return Reading(RECOVERED if cg in self.recovered else CLEAR, near=cg in self.near)

    def freeze(self, cg: Scope, frozen: bool) -> bool:
        self.frozen.append((cg, frozen))
        return self.mode is Mode.VALVE

    def arm_near(self, cg: Scope, on: bool) -> None:
        self.armed[cg] = on

    def at_limit(self, cg: Scope) -> bool:
        return cg not in self.not_at_limit

    def snapshot(self, cg: CgroupPath, budget: int | None = None) -> Snapshot:
        return self.host.env().snapshot(cg, lazy=budget is not None, budget=budget)

    def plan_mark(self, domain: CgroupPath) -> Hashable | None:
        return self.tree_mark

    def kill(self, decision: Decision) -> list[int]:
        assert decision.victim is not None
        if decision.kill_group is None and decision.victim.pid in self.dead:
            return []  # a victim already dying is not signalled (nor counted) again
        pids = list(decision.group_pids) or [decision.victim.pid]
        self.killed += pids
        return pids

    def kill_all(self, cg: CgroupPath) -> list[int]:
        self.killed_all.append(cg)
        return [p.pid for p in self.snapshot(cg).subtree_processes(cg)]

    def alive(self, pids: Iterable[int]) -> list[int]:
        return [p for p in pids if p not in self.dead]

    def emit(self, event: DaemonRecord) -> None:
        if self.held is not None:
            self.held.append(cast("dict[str, Any]", event))
            return
        self.events.append(cast("dict[str, Any]", event))

    def hold_records(self, on: bool) -> None:
        if on:
            self.held = [] if self.held is None else self.held
            return
        held, self.held = self.held or [], None
        self.events += held

    def reap(self, pids: list[int]) -> None:
        self.reaped += pids

    def exited(self, pids: Iterable[int]) -> bool:
        self.exit_asks += 1
        return not self.slow_exit or all(p in self.dead for p in pids)

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]


def select(snap: Snapshot, root: CgroupPath, exclude: Iterable[int]) -> Decision:
    return select_priority(snap, root, exclude)


def oom_at(
    host: FakeHost, t: float, settings: Settings | None = None
) -> tuple[FakePorts, DaemonCore]:
    """/jobs managed with delay 0 goes under OOM at time t; the core has ticked once."""
    ports = FakePorts(host, {"/jobs": 0})
    core = DaemonCore(ports, select, settings or Settings())
    core.rescan(0.0)
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), t)
    core.tick(t)
    return ports, core


def jobs(host: FakeHost, delay_ms: int | None = None) -> FakeHost:
    """/jobs (256 MiB): low/ (badness 100, two small processes: 10 the bigger) and
    high/ (badness 900, one big process)."""
    host.cgroup("/jobs", limit=256 << 20, delay_ms=delay_ms)
    host.cgroup("/jobs/low", badness=100, usage=10 << 20)
    host.cgroup("/jobs/high", badness=900, usage=200 << 20)
    host.process(10, "/jobs/low", comm="small", rss_anon_kb=10_000)
    host.process(11, "/jobs/low", comm="smaller", rss_anon_kb=5_000)
    host.process(20, "/jobs/high", comm="big", rss_anon_kb=200_000)
    return host


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    return jobs(fake_v1, delay_ms=2000)


def test_waits_for_the_delay_then_kills_the_priority_victim(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 2000})
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    assert ports.taken == ["/jobs"]
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 1.0)
    assert ports.kinds()[-1] == "under_oom"
    assert core.tick(1.5) == pytest.approx(3.0)  # the delay runs out at 3.0
    assert ports.killed == []
    core.tick(3.0)
    assert ports.killed == [10]  # lowest badness cgroup, then the biggest in it
    kill = ports.events[-1]
    assert (kill["kind"], kill["pid"], kill["waited_ms"]) == ("daemon_kill", 10, 2000)


def test_oom_resolved_by_userspace_within_the_delay(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 2000})
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 1.0)
    ports.oom.clear()  # someone raised the limit
    core.tick(2.0)
    core.tick(5.0)
    assert ports.killed == []
    resolved = ports.events[-1]
    assert (resolved["kind"], resolved["by"], resolved["kills"]) == ("oom_resolved", "userspace", 0)


def test_busy_from_under_oom_until_resolved(host: FakeHost) -> None:
    """The loop holds whole-tree walks back while busy (an episode under way)."""
    ports = FakePorts(host, {"/jobs": 2000})
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    assert not core.busy()
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 1.0)
    assert core.busy()
    ports.oom.clear()
    core.tick(2.0)
    assert ports.kinds()[-1] == "oom_resolved" and not core.busy()


def test_delay_zero_kills_at_once(host: FakeHost) -> None:
    ports, _ = oom_at(host, 1.0)
    assert ports.killed == [10]


def test_livelock_escalates_to_next_victims_then_kill_all(host: FakeHost) -> None:
    ports, core = oom_at(host, 0.0, Settings(grace=0.5, max_rounds=2))
    assert ports.killed == [10]
    ports.dead.add(10)
    host.remove_process(10)
    core.tick(0.4)  # within grace: nothing new
    assert ports.killed == [10]
    core.tick(0.5)
    assert ports.killed == [10, 11]
    ports.dead.add(11)
    host.remove_process(11)
    core.tick(1.0)  # two rounds done and still under OOM: kill-all
    # /jobs/low is now empty, so the lowest-priority child with something killable
    assert ports.killed_all == ["/jobs/high"]
    assert "daemon_escalated" in ports.kinds()
    ports.oom.clear()
    core.tick(1.6)
    assert ports.events[-1]["kind"] == "oom_resolved" and ports.events[-1]["by"] == "daemon"


def test_waits_while_the_previous_victim_is_still_exiting(host: FakeHost) -> None:
    ports, core = oom_at(host, 0.0, Settings(grace=0.5))
    core.tick(0.6)  # victim 10 not dead yet: do not pile on
    assert ports.killed == [10]


def test_dry_run_decides_but_kills_nothing(host: FakeHost) -> None:
    ports, _ = oom_at(host, 0.0, Settings(dry_run=True))
    assert ports.killed == [] and ports.events[-1]["kind"] == "would_kill"
    assert ports.events[-1]["pid"] == 10


def test_ancestor_oom_not_ours_is_left_to_the_kernel(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 0})
    ports.not_at_limit.add("/jobs")
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 0.0)
    core.tick(0.0)
    assert ports.killed == [] and "under_oom" not in ports.kinds()


def test_nested_managed_memcgs_the_outer_episode_wins(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 1000, "/jobs/low": 0})
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    ports.oom.update({"/jobs", "/jobs/low"})  # the kernel marks the subtree under OOM
    core.notify(CgroupPath("/jobs"), 0.0)
    core.notify(CgroupPath("/jobs/low"), 0.0)
    core.tick(0.0)
    assert ports.killed == []  # /jobs handles it, after its own delay
    core.tick(1.0)
    assert ports.killed == [10]


def test_adopts_memcg_already_under_oom_at_start(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 60_000})
    ports.oom.add("/jobs")
    core = DaemonCore(ports, select)
    core.rescan(0.0, starting=True)
    core.tick(0.0)
    assert ports.killed == [10]  # no 60 s wait: it may have been hung since a crash
    assert ports.events[1]["kind"] == "under_oom" and ports.events[1]["adopted"] is True


def test_rescan_takes_over_and_releases(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 100})
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    ports.delays["/jobs/low"] = 50
    ports.delays["/jobs"] = 300
    del ports.delays["/jobs"]
    core.rescan(1.0)
    assert ports.released == ["/jobs"] and ports.taken == ["/jobs", "/jobs/low"]
    core.release_all()
    assert ports.released == ["/jobs", "/jobs/low"]


def test_rescan_looks_at_every_watch_without_a_notification(host: FakeHost) -> None:
    """No event says that someone rewrote memory.high (systemd applying MemoryHigh=):
    the rescan asks the ports for each watch's level, which refreshes the valve, and an
    OOM it finds starts its episode there."""
    ports = FakePorts(host, {"/jobs": 2000})
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    ports.oom.add("/jobs")  # no notify
    core.rescan(2.0)
    assert ports.kinds()[-1] == "under_oom"
    core.tick(4.0)
    assert ports.killed == [10]


def test_lowest_priority_child(host: FakeHost) -> None:
    snap = host.env().snapshot(CgroupPath("/jobs"))
    assert lowest_priority_child(snap, CgroupPath("/jobs")) == CgroupPath("/jobs/low")
    assert lowest_priority_child(snap, CgroupPath("/jobs/low")) is None


def test_oom_back_within_the_grace_continues_the_livelock(host: FakeHost) -> None:
    ports, core = oom_at(host, 0.0, Settings(grace=0.5, max_rounds=1))
    assert ports.killed == [10]
    ports.dead.add(10)
    host.remove_process(10)
    ports.oom.clear()
    core.tick(0.01)  # the victim's death freed a little: resolved for a moment
    assert ports.events[-1]["kind"] == "oom_resolved"
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 0.02)  # ...and OOM again at once
    core.tick(0.3)
    assert ports.killed_all == []  # the grace is not over yet
    core.tick(0.5)
    assert ports.killed_all == ["/jobs/low"]  # still holds pid 11, lowest badness


def test_a_later_oom_starts_afresh(host: FakeHost) -> None:
    ports, core = oom_at(host, 0.0, Settings(grace=0.5, max_rounds=1))
    ports.dead.add(10)
    host.remove_process(10)
    ports.oom.clear()
    core.tick(0.01)
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 5.0)  # a new OOM long after: a new first round
    core.tick(5.0)
    assert ports.killed == [10, 11] and ports.killed_all == []


@pytest.mark.parametrize(
    ("stall", "window", "privileged", "expected"),
    [
        (150_000, 1_000_000, True, (150_000, 1_000_000)),
        (150_000, 1_000_000, False, (300_000, 2_000_000)),
        (500_000, 4_000_000, False, (500_000, 4_000_000)),
        (100_000, 2_500_000, False, (160_000, 4_000_000)),
    ],
)
def test_psi_params_follow_the_kernels_rules(
    stall: int, window: int, privileged: bool, expected: tuple[int, int]
) -> None:
    from memcgctl.daemon.ports import psi_params

    assert psi_params(stall, window, privileged) == expected


def test_capability_from_status(fake_v1: FakeHost) -> None:
    status = fake_v1.proc / "100" / "status"
    status.parent.mkdir()
    status.write_text("Name:\tx\nCapEff:\t000001fffeffffff\n")  # this host: root without 24
    proc = fake_v1.env().proc
    assert proc.has_capability(21, 100) is True  # CAP_SYS_ADMIN
    assert proc.has_capability(24, 100) is False  # CAP_SYS_RESOURCE


def test_a_recovered_domain_starts_the_next_oom_at_round_one(host: FakeHost) -> None:
    """Growers one after another (issue 12 #6): each OOM within the grace of the last
    kill, but the kill took the memcg well below its limit in between."""
    ports, core = oom_at(host, 0.0, Settings(grace=0.5, max_rounds=1))
    for i, t in enumerate((0.05, 0.10, 0.15, 0.20)):
        ports.dead.update(ports.killed)
        ports.oom.clear()
        ports.recovered.add("/jobs")
        core.tick(t)  # the check after the kill sees the domain recovered
        assert ports.events[-1]["kind"] == "oom_resolved", i
        ports.recovered.clear()
        ports.dead.clear()
        ports.killed.clear()
        ports.oom.add("/jobs")
        core.notify(CgroupPath("/jobs"), t + 0.01)
        core.tick(t + 0.01)
        assert ports.killed == [10], i  # the priority victim again, never kill-all
    assert ports.killed_all == [] and "daemon_escalated" not in ports.kinds()


def test_an_adopted_episode_honours_the_grace(host: FakeHost) -> None:
    """Restarted during an OOM (issue 12 #7): act at once, then wait the grace."""
    ports = FakePorts(host, {"/jobs": 60_000})
    ports.oom.add("/jobs")
    core = DaemonCore(ports, select, Settings(grace=0.5))
    core.rescan(0.0, starting=True)
    core.tick(0.0)
    assert ports.killed == [10]
    ports.dead.add(10)
    host.remove_process(10)
    core.tick(0.002)
    core.tick(0.2)
    assert ports.killed == [10]  # still short, but the grace has not passed
    core.tick(0.5)
    assert ports.killed == [10, 11]


def test_valve_critical_freezes_the_domain_and_thaws_after_the_kill(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 1000}, mode=Mode.VALVE)
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 0.0)
    assert ports.kinds()[-1] == "under_oom" and ports.events[-1]["source"] == "memory.events"
    ports.state["/jobs"] = CRITICAL  # throttling outrun
    next_at = core.tick(0.01)
    assert ports.frozen == [("/jobs", True)] and "valve_frozen" in ports.kinds()
    assert next_at == pytest.approx(0.02)  # valve episodes are looked at every 10 ms
    ports.state["/jobs"] = SHORT  # frozen: no further growth, but the delay still runs
    core.tick(0.5)
    assert ports.killed == [] and ports.frozen == [("/jobs", True)]
    core.tick(1.0)
    assert ports.killed == [10]
    ports.dead.add(10)
    ports.oom.clear()
    ports.recovered.add("/jobs")
    core.tick(1.002)
    assert ports.frozen[-1] == ("/jobs", False)
    assert ports.kinds()[-2:] == ["oom_resolved", "valve_thawed"]


def test_a_refused_freeze_is_not_retried_within_the_episode(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 1000}, mode=Mode.VALVE)
    ports.freeze = lambda cg, frozen: bool(ports.frozen.append((cg, frozen)))  # type: ignore[method-assign,func-returns-value]
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    ports.oom.add("/jobs")
    ports.state["/jobs"] = CRITICAL
    for t in (0.0, 0.01, 0.02, 0.03):
        core.notify(CgroupPath("/jobs"), t)
    assert ports.frozen == [("/jobs", True)] and "valve_frozen" not in ports.kinds()


def test_host_critical_cuts_the_delay_short(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 5000}, mode=Mode.HOST)
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 0.0)
    core.tick(0.1)
    assert ports.killed == []
    ports.state["/jobs"] = CRITICAL
    core.tick(0.2)
    assert ports.killed == [10] and "delay_cut_short" in ports.kinds()
    assert ports.frozen == []  # the host cannot be frozen


def test_shadow_mode_compares_the_kernels_victim(host: FakeHost) -> None:
    ports = FakePorts(host, {})
    core = DaemonCore(ports, select, Settings(dry_run=True))
    big = host.env().snapshot(CgroupPath("/jobs")).processes[20]
    host.remove_process(20)  # the kernel killed the biggest: gone from /proc
    core.kernel_killed(CgroupPath("/jobs"), big)
    would, kernel = ports.events[-2], ports.events[-1]
    assert (would["kind"], would["pid"]) == ("would_kill", 10)
    assert (kernel["kind"], kernel["pid"], kernel["agree"]) == ("kernel_kill", 20, False)
    assert kernel["would_kill_pid"] == 10
    core.kernel_killed(CgroupPath("/jobs"), host.env().snapshot(CgroupPath("/jobs")).processes[10])
    assert ports.events[-1]["agree"] is True
    assert (core.kernel_kills, core.agreed) == (2, 1)


def test_live_mode_reports_a_kernel_kill_it_did_not_prevent(host: FakeHost) -> None:
    ports = FakePorts(host, {})
    core = DaemonCore(ports, select)
    core.kernel_killed(CgroupPath("/jobs"), host.env().snapshot(CgroupPath("/jobs")).processes[20])
    assert ports.kinds() == ["kernel_kill"] and core.kernel_kills == 1


def test_with_process_puts_a_reaped_victim_back(host: FakeHost) -> None:
    snap = host.env().snapshot(CgroupPath("/jobs"))
    big = snap.processes[20]
    host.remove_process(20)
    after = host.env().snapshot(CgroupPath("/jobs"))
    assert 20 not in after.processes
    back = with_process(after, big)
    assert back.processes[20] == big and 20 in back.cgroups[CgroupPath("/jobs/high")].pids
    assert with_process(snap, big) is snap  # still there: unchanged


def test_the_victim_is_chosen_just_before_the_deadline(host: FakeHost) -> None:
    """With a clock, the snapshot and selection run ahead of the deadline, so the kill
    is only a signal; a planned victim that exits meanwhile is chosen again."""
    now = [0.0]
    ports = FakePorts(host, {"/jobs": 1000})
    snapshots: list[float] = []
    real_snapshot = ports.snapshot

    def counting(cg: CgroupPath) -> Snapshot:
        snapshots.append(now[0])
        return real_snapshot(cg)

    ports.snapshot = counting  # type: ignore[method-assign, assignment]
    core = DaemonCore(ports, select, clock=lambda: now[0])
    core.rescan(0.0)
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 0.0)
    wake = core.tick(0.5)
    # twice the last selection's time ahead (5 ms before any was measured)
    assert wake is not None and wake == pytest.approx(0.99)
    now[0] = 0.99
    core.tick(0.99)
    assert snapshots == [0.99] and ports.killed == []
    ports.dead.add(10)  # the planned victim exits on its own
    host.remove_process(10)
    now[0] = 1.0
    core.tick(1.0)
    assert ports.killed == [11] and snapshots == [0.99, 1.0]
    assert ports.events[-1]["late_ms"] == 0.0


class FaultyPorts(FakePorts):
    """Fake ports whose level() raises an unexpected error for the cgroups in ``bad``."""

    def __init__(self, host: FakeHost, delays: dict[str, int], bad: set[str]) -> None:
        super().__init__(host, delays)
        self.bad = bad

    def level(self, cg: Scope) -> Reading:
        if cg in self.bad:
            raise ValueError(f"unexpected garbage in {cg}")
        return super().level(cg)


def test_an_unexpected_error_in_one_memcg_is_reported_and_that_memcg_left_to_the_kernel(
    host: FakeHost,
) -> None:
    """Issue 21: a fault in one cgroup is logged, that cgroup released (its knobs
    restored: the kernel's OOM killer acts there again) and skipped for a while; the
    other managed memcg is still enforced, and nothing raises out of the core."""
    host.cgroup("/other", limit=64 << 20)
    host.process(30, "/other", comm="victim", rss_anon_kb=1_000)
    ports = FaultyPorts(host, {"/jobs": 0, "/other": 0}, bad=set())
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    assert sorted(ports.taken) == ["/jobs", "/other"]
    ports.bad.add("/jobs")
    ports.oom |= {"/jobs", "/other"}
    core.notify(CgroupPath("/jobs"), 1.0)
    core.notify(CgroupPath("/other"), 1.0)
    core.tick(1.0)
    assert ports.killed == [30]  # /other is still enforced
    errors = [e for e in ports.events if e["kind"] == "daemon_error"]
    assert [(e["cgroup"], e["where"]) for e in errors] == [("/jobs", "notify")]
    assert "unexpected garbage in /jobs" in errors[0]["error"]
    assert ports.released == ["/jobs"] and CgroupPath("/jobs") not in core.watches
    core.rescan(10.0)  # quarantined: not taken over again at once
    assert ports.taken.count("/jobs") == 1
    ports.bad.clear()
    core.rescan(40.0)  # after the quarantine it is managed again
    assert ports.taken.count("/jobs") == 2


def test_a_rescan_that_raises_keeps_the_managed_set(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 0})
    core = DaemonCore(ports, select)
    core.rescan(0.0)

    def broken() -> dict[Scope, int]:
        raise OSError(5, "Input/output error")

    ports.managed = broken  # type: ignore[method-assign]
    core.rescan(2.0)
    assert CgroupPath("/jobs") in core.watches and ports.released == []
    assert ports.events[-1]["kind"] == "daemon_error" and ports.events[-1]["where"] == "rescan"
