"""The daemon's standing plan (issue 22): near its line, a delay-0 watch keeps its victim
chosen ahead, so that at the event the kill is only a signal.  Driven by ``tick`` and
``notify`` with fake ports and a fake clock on fixture trees."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from memcgctl.daemon.choosing import PLAN_COST, PLAN_MIN_PERIOD
from memcgctl.daemon.core import QUIET_S, DaemonCore, Settings
from memcgctl.daemon.protocol import Mode, Reading
from memcgctl.daemon.valve import CLEAR, SHORT
from memcgctl.logic.decision import Decision
from memcgctl.logic.priority import plan_inputs, select_priority_brief
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.model import Snapshot
from memcgctl.vocab.records import daemon_record
from tests.fakehost import FakeHost
from tests.test_daemon_core import FakePorts, jobs
from tests.test_scale_unit import hosts, layout_host

JOBS = CgroupPath("/jobs")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class CountingSelect:
    """The daemon's selection (the brief walk), counted; each call advances the clock
    by ``cost`` (what a choice takes)."""

    def __init__(self, clock: Clock, cost: float = 0.0) -> None:
        self.clock = clock
        self.cost = cost
        self.calls = 0

    def __call__(self, snap: Snapshot, root: CgroupPath, exclude: Iterable[int]) -> Decision:
        self.calls += 1
        self.clock.t += self.cost
        return select_priority_brief(snap, root, exclude)


def daemon(
    host: FakeHost,
    delay: int = 0,
    cost: float = 0.0,
    mode: Mode = Mode.VALVE,
    ports_type: type[FakePorts] = FakePorts,
) -> tuple[FakePorts, DaemonCore, Clock, CountingSelect]:
    clock = Clock()
    choose = CountingSelect(clock, cost)
    ports = ports_type(host, {"/jobs": delay}, mode=mode)
    core = DaemonCore(ports, choose, Settings(), clock=clock)
    core.rescan(0.0)
    return ports, core, clock, choose


def at(clock: Clock, t: float) -> float:
    clock.t = t
    return t


def near_and_planned(ports: FakePorts, core: DaemonCore, clock: Clock, t: float = 1.0) -> None:
    """/jobs comes near its line (seen at a rescan); the next tick chooses ahead."""
    ports.near.add("/jobs")
    core.rescan(at(clock, t))
    core.tick(at(clock, t))
    assert core.watches[JOBS].plan is not None


def the_event(ports: FakePorts, core: DaemonCore, clock: Clock, t: float) -> None:
    """The valve's event: /jobs short; the loop notifies the core, then ticks."""
    ports.oom.add("/jobs")
    core.notify(JOBS, at(clock, t))
    core.tick(at(clock, t))


def kill_record(ports: FakePorts) -> dict[str, Any]:
    return next(e for e in ports.events if e["kind"] == "daemon_kill")


def test_far_from_the_line_nothing_is_chosen_ahead(fake_v1: FakeHost) -> None:
    _, core, clock, choose = daemon(jobs(fake_v1))
    for n in range(1, 50):
        core.rescan(at(clock, n * 0.5))
        assert core.tick(at(clock, n * 0.5)) is None  # and no wake-up of its own
    assert choose.calls == 0 and core.watches[JOBS].plan is None


def test_near_the_line_the_victim_is_chosen_ahead_then_dropped_when_far_again(
    fake_v1: FakeHost,
) -> None:
    ports, core, clock, choose = daemon(jobs(fake_v1))
    near_and_planned(ports, core, clock)
    assert choose.calls == 1
    plan = core.watches[JOBS].plan
    assert plan is not None and plan.victim is not None and plan.victim.pid == 10
    # while near, it wakes itself to choose again (a memcg has no poll of its own)
    assert core.tick(at(clock, 1.01)) == pytest.approx(PLAN_MIN_PERIOD + 1.0)
    core.tick(at(clock, 1.0 + PLAN_MIN_PERIOD))
    assert choose.calls == 2
    ports.near.clear()
    core.rescan(at(clock, 1.2))
    assert core.watches[JOBS].plan is None
    for n in range(10):
        core.tick(at(clock, 1.3 + n))
    assert choose.calls == 2


def test_a_delay_longer_than_a_choice_keeps_no_standing_plan(fake_v1: FakeHost) -> None:
    ports, core, clock, choose = daemon(jobs(fake_v1), delay=1000)
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    core.tick(at(clock, 1.0))
    assert choose.calls == 0  # chosen just before its deadline instead


def test_a_fresh_plan_is_used_at_the_event_and_the_signal_goes_first(fake_v1: FakeHost) -> None:
    ports, core, clock, choose = daemon(jobs(fake_v1))
    near_and_planned(ports, core, clock, t=1.0)
    ports.oom.add("/jobs")
    core.notify(JOBS, at(clock, 1.03))  # killed within the notification, no tick needed
    assert ports.killed == [10]
    assert choose.calls == 1  # nothing chosen after the event
    kinds = ports.kinds()
    assert kinds[-2:] == ["under_oom", "daemon_kill"]  # the journal's order is kept
    under, kill = ports.events[-2], ports.events[-1]
    assert kill["pid"] == 10 and kill["plan_age_ms"] == 30.0 and kill["late_ms"] == 0.0
    assert "time" in under  # the episode's start, written after the signal
    core.tick(at(clock, 1.04))
    assert ports.killed == [10]


def test_a_stale_plan_is_chosen_again_after_the_event(fake_v1: FakeHost) -> None:
    ports, core, clock, choose = daemon(jobs(fake_v1))
    near_and_planned(ports, core, clock, t=1.0)
    the_event(ports, core, clock, 1.0 + 2 * PLAN_MIN_PERIOD + 0.01)  # no refresh meanwhile
    assert ports.killed == [10] and choose.calls == 2
    assert "plan_age_ms" not in kill_record(ports)
    assert "time" not in next(e for e in ports.events if e["kind"] == "under_oom")


def test_a_plan_whose_victim_died_is_not_used(fake_v1: FakeHost) -> None:
    host = jobs(fake_v1)
    ports, core, clock, choose = daemon(host)
    near_and_planned(ports, core, clock)
    host.remove_process(10)
    the_event(ports, core, clock, 1.01)
    assert ports.killed == [11] and choose.calls == 2
    assert "plan_age_ms" not in kill_record(ports)


def test_a_plan_whose_victim_is_exiting_is_not_used(fake_v1: FakeHost) -> None:
    ports, core, clock, choose = daemon(jobs(fake_v1))
    near_and_planned(ports, core, clock)
    ports.dead.add(10)  # still listed in its cgroup, its memory gone
    the_event(ports, core, clock, 1.01)
    assert choose.calls == 2 and "plan_age_ms" not in kill_record(ports)


def test_a_plan_whose_victim_moved_is_not_used(fake_v1: FakeHost) -> None:
    host = jobs(fake_v1)
    ports, core, clock, choose = daemon(host)
    near_and_planned(ports, core, clock)
    host.remove_process(10)
    host.process(10, "/jobs/high", comm="small", rss_anon_kb=10_000)
    the_event(ports, core, clock, 1.01)
    assert ports.killed == [11] and choose.calls == 2


def test_a_process_in_an_empty_lower_cgroup_makes_the_plan_stale(fake_v1: FakeHost) -> None:
    host = jobs(fake_v1)
    host.cgroup("/jobs/lowest", badness=10)  # empty: skipped by the walk
    host.cgroup("/jobs/lowest/inner")
    ports, core, clock, choose = daemon(host)
    near_and_planned(ports, core, clock)
    plan = core.watches[JOBS].plan
    assert plan is not None and (CgroupPath("/jobs/lowest"), True) in plan_inputs(plan)
    host.process(30, "/jobs/lowest/inner", comm="newcomer", rss_anon_kb=1_000)
    the_event(ports, core, clock, 1.01)
    assert ports.killed == [30] and choose.calls == 2


def test_a_change_the_tree_watch_saw_makes_the_plan_stale(fake_v1: FakeHost) -> None:
    ports, core, clock, choose = daemon(jobs(fake_v1))
    near_and_planned(ports, core, clock)
    ports.tree_mark += 1  # a badness written, a cgroup made or removed in the domain
    the_event(ports, core, clock, 1.01)
    assert ports.killed == [10] and choose.calls == 2
    assert "plan_age_ms" not in kill_record(ports)


def test_no_plan_is_kept_when_it_cannot_be_checked(fake_v1: FakeHost) -> None:
    class Unchecked(FakePorts):
        def plan_stamp(self, decision: Decision) -> None:
            self.stamps += 1
            return None  # no tree watch

    ports, core, clock, choose = daemon(jobs(fake_v1), ports_type=Unchecked)
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    core.tick(at(clock, 1.0))
    assert choose.calls == 1 and core.watches[JOBS].plan is None
    core.tick(at(clock, 1.5))
    assert choose.calls == 1  # tried again only a second later
    the_event(ports, core, clock, 1.6)
    assert ports.killed == [10] and choose.calls == 2


def test_refreshing_costs_at_most_a_tenth_of_a_core(fake_v1: FakeHost) -> None:
    cost = 0.02  # each choice takes 20 ms
    ports, core, clock, choose = daemon(jobs(fake_v1), cost=cost)
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    start = clock.t
    t = clock.t
    while t < start + 10.0:  # the loop ticks every 5 ms (other fds wake it)
        core.tick(at(clock, t))
        t = max(t + 0.005, clock.t)
    busy = choose.calls * cost
    assert busy / (clock.t - start) <= 1 / PLAN_COST + 0.01
    assert choose.calls >= 10.0 / (PLAN_COST * cost) * 0.8  # and it did refresh


def test_the_host_refreshes_at_its_polls_without_a_timer_of_its_own(fake_v1: FakeHost) -> None:
    class Host(FakePorts):
        def level(self, cg: Scope) -> Reading:
            if cg in self.oom:
                return Reading(SHORT, 0.002, near=True)
            return Reading(CLEAR, 0.1, near=cg in self.near)  # polled every 100 ms

    ports, core, clock, choose = daemon(jobs(fake_v1), mode=Mode.HOST, ports_type=Host)
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    t = core.tick(at(clock, 1.0))
    assert t == pytest.approx(1.1)  # the poll, no refresh timer before it
    assert choose.calls == 1
    for _ in range(9):
        assert t is not None
        nxt = core.tick(at(clock, t))
        assert nxt == pytest.approx(t + 0.1)
        t = nxt
    assert choose.calls == 10  # one per poll
    ports.oom.add("/jobs")
    core.tick(at(clock, 2.05))  # the poll finds it short: the plan of 1.9 holds
    assert ports.killed == [10] and choose.calls == 10


def test_with_a_pre_kill_hook_the_plan_is_used_at_the_next_tick(fake_v1: FakeHost) -> None:
    ports, core, clock, choose = daemon(jobs(fake_v1))

    class Pre:  # the core asks only these of its hooks here
        pre = "true"
        lead_s = 0.0

        def killing(self, cg: Scope, decision: Decision) -> None:
            assert decision.victim is not None
            ports.emit(daemon_record("hook_skipped", str(cg)))

        def killed(self, cg: Scope, decision: Decision, pids: list[int]) -> None:
            pass

        def reap(self) -> float | None:
            return None

    core.hooks = Pre()  # type: ignore[assignment]
    near_and_planned(ports, core, clock)
    the_event(ports, core, clock, 1.01)
    assert ports.kinds()[-3:] == ["under_oom", "hook_skipped", "daemon_kill"]
    assert kill_record(ports)["plan_age_ms"] == 10.0 and choose.calls == 1


@given(hosts())
@settings(max_examples=30, deadline=None)
def test_a_plan_that_holds_is_the_fresh_choice(layout: list[tuple[str, dict[str, Any]]]) -> None:
    """Nothing changed between the plan and the event: the victim is the one a fresh
    choice at the event would take."""
    base = Path(tempfile.mkdtemp(prefix="memcgctl-plan-"))
    try:
        host = layout_host(base, layout)
        clock = Clock()
        ports = FakePorts(host, {"/": 0}, mode=Mode.VALVE)
        core = DaemonCore(ports, CountingSelect(clock), Settings(), clock=clock)
        root = CgroupPath("/")
        core.rescan(0.0)
        ports.near.add("/")
        core.rescan(at(clock, 1.0))
        core.tick(at(clock, 1.0))
        ports.oom.add("/")
        core.notify(root, at(clock, 1.02))
        core.tick(at(clock, 1.02))
        fresh = select_priority_brief(host.env().snapshot(root, lazy=True), root, ())
        if fresh.victim is None:
            assert ports.killed == []
            return
        assert ports.killed == (list(fresh.group_pids) or [fresh.victim.pid])
        assert kill_record(ports)["plan_age_ms"] == 20.0
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_growing_towards_the_line_it_is_looked_at_sooner_only_when_it_plans_ahead(
    fake_v1: FakeHost,
) -> None:
    class Growing(FakePorts):
        def level(self, cg: Scope) -> Reading:
            return Reading(CLEAR, soon=0.2)  # the ports saw it grow towards its near line

    for delay, wake in ((0, 1.2), (1000, None)):
        clock = Clock()
        ports = Growing(jobs(FakeHost(fake_v1.base / str(delay))), {"/jobs": delay})
        core = DaemonCore(ports, CountingSelect(clock), Settings(), clock=clock)
        core.rescan(at(clock, 1.0))
        assert core.tick(at(clock, 1.0)) == (pytest.approx(wake) if wake else None)


def test_a_plan_holds_when_a_loser_left_or_a_kernel_thread_came(fake_v1: FakeHost) -> None:
    host = jobs(fake_v1)
    ports, core, clock, choose = daemon(host)
    near_and_planned(ports, core, clock)
    host.remove_process(11)  # a loser in the victim's cgroup left
    host.process(3, "/jobs/low", comm="kworker/0:1", kthread=True)  # never a candidate
    the_event(ports, core, clock, 1.01)
    assert ports.killed == [10] and choose.calls == 1
    assert kill_record(ports)["plan_age_ms"] == 10.0


def test_a_process_come_beside_the_victim_makes_the_plan_stale(fake_v1: FakeHost) -> None:
    host = jobs(fake_v1)
    ports, core, clock, choose = daemon(host)
    near_and_planned(ports, core, clock)
    host.process(12, "/jobs/low", comm="bigger", rss_anon_kb=50_000)
    the_event(ports, core, clock, 1.01)
    assert ports.killed == [12] and choose.calls == 2


def test_a_delay0_valve_asks_for_its_lower_step_and_plans_at_its_event(
    fake_v1: FakeHost,
) -> None:
    """v2, delay 0: the core asks the ports for the valve's lower step (so the kernel's
    high event says "near"); that notification alone, no rescan, has the victim chosen
    at the next tick.  A delay longer than a choice takes no step; nor does v1."""
    ports, core, clock, choose = daemon(jobs(fake_v1))
    assert ports.armed == {JOBS: True}
    ports.near.add("/jobs")
    core.notify(JOBS, at(clock, 1.0))  # the high event at the lower step
    assert core.tick(at(clock, 1.0)) is not None and choose.calls == 1
    assert core.watches[JOBS].plan is not None
    ports.delays["/jobs"] = 1000
    core.rescan(at(clock, 1.5))
    assert ports.armed == {JOBS: False}
    v1_ports, _, _, _ = daemon(jobs(fake_v1), mode=Mode.OOM)
    assert v1_ports.armed == {}


# -- after the signal: out of the exiting victim's way (issue 22) -----------------------
class LookingPorts(FakePorts):
    """Counts the looks at /jobs (level reads)."""

    looks = 0

    def level(self, cg: Scope) -> Reading:
        self.looks += 1
        return super().level(cg)


def quiet_kill(fake_v1: FakeHost) -> tuple[LookingPorts, DaemonCore, Clock]:
    """A standing plan used at the event (1.03 s); the victim (pid 10) exits only once
    the test says so."""
    ports, core, clock, _ = daemon(jobs(fake_v1), ports_type=LookingPorts)
    assert isinstance(ports, LookingPorts)
    ports.slow_exit = True
    near_and_planned(ports, core, clock, t=1.0)
    ports.oom.add("/jobs")
    core.notify(JOBS, at(clock, 1.03))
    assert ports.killed == [10]
    return ports, core, clock


def test_the_kills_records_and_the_next_look_wait_until_the_victim_exited(
    fake_v1: FakeHost,
) -> None:
    ports, core, clock = quiet_kill(fake_v1)
    before = list(ports.events)
    assert ports.held is not None and [e["kind"] for e in ports.held] == [
        "under_oom",
        "daemon_kill",
    ]
    looks = ports.looks
    # while it exits: no record written, no look, however often the loop wakes
    assert core.tick(at(clock, 1.031)) == pytest.approx(1.03 + QUIET_S)
    core.notify(JOBS, at(clock, 1.032))  # the valve fired again
    core.tick(at(clock, 1.032))
    assert ports.events == before and ports.looks == looks
    ports.dead.add(10)  # its pidfd fires: the loop wakes and ticks
    core.tick(at(clock, 1.033))
    assert ports.held is None
    assert ports.kinds()[len(before) :] == ["under_oom", "daemon_kill"]  # the same order
    under, kill = ports.events[-2], ports.events[-1]
    assert kill["pid"] == 10 and kill["plan_age_ms"] == 30.0 and kill["late_ms"] == 0.0
    assert "time" in under  # under_oom still carries the episode's start
    assert ports.looks == looks + 1  # the first look after the kill, now
    assert ports.reaped == []  # it freed its own memory: nothing to reap


def test_a_victim_that_does_not_exit_holds_the_records_back_only_briefly(
    fake_v1: FakeHost,
) -> None:
    ports, core, clock = quiet_kill(fake_v1)
    looks = ports.looks
    core.tick(at(clock, 1.03 + QUIET_S - 0.001))
    assert "daemon_kill" not in ports.kinds() and ports.looks == looks
    core.tick(at(clock, 1.03 + QUIET_S))
    assert ports.kinds()[-2:] == ["under_oom", "daemon_kill"] and ports.held is None
    assert ports.looks == looks + 1
    assert ports.reaped == [10]  # still exiting: its memory is given back from here
    # the episode goes on as before: looked at again soon, the next round at the grace
    assert core.watches[JOBS].next_check is not None
    ports.dead.add(10)
    core.tick(at(clock, 1.03 + core.settings.grace + 0.01))
    assert core.watches[JOBS].rounds == 2 and ports.killed == [10, 11]


def test_records_held_back_are_written_when_the_daemon_stops(fake_v1: FakeHost) -> None:
    ports, core, _ = quiet_kill(fake_v1)
    assert "daemon_kill" not in ports.kinds()
    core.release_all()  # stopped right after the signal
    assert ports.held is None
    assert ports.kinds()[-3:] == ["under_oom", "daemon_kill", "daemon_released"]


class GoneVictimPorts(FakePorts):
    """Every victim has gone by the time of its signal."""

    def kill(self, decision: Decision) -> list[int]:
        return []


def test_nothing_signalled_holds_nothing_back(fake_v1: FakeHost) -> None:
    ports, core, clock, _ = daemon(jobs(fake_v1), ports_type=GoneVictimPorts)
    ports.slow_exit = True
    near_and_planned(ports, core, clock, t=1.0)
    ports.oom.add("/jobs")
    core.notify(JOBS, at(clock, 1.03))
    assert ports.held is None  # written at once: no victim to wait for
    assert ports.kinds()[-2:] == ["under_oom", "daemon_kill"]
    assert kill_record(ports)["killed"] == []
    assert core.watches[JOBS].quiet_until is None


class BrokenKillPorts(FakePorts):
    """The kill raises something unexpected (a bug) after the hold began."""

    def kill(self, decision: Decision) -> list[int]:
        raise RuntimeError("kill bug")


def test_a_kill_that_failed_midway_holds_nothing_back(fake_v1: FakeHost) -> None:
    ports, core, clock, _ = daemon(jobs(fake_v1), ports_type=BrokenKillPorts)
    ports.slow_exit = True
    ports.oom.add("/jobs")
    core.notify(JOBS, at(clock, 1.0))
    core.tick(at(clock, 1.0))  # acts: the kill raises, /jobs is handed to the kernel
    assert ports.held is None
    assert "daemon_error" in ports.kinds() and "daemon_released" in ports.kinds()
