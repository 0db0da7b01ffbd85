"""The daemon's standing plan (issue 22): near its line, a delay-0 watch keeps its victim
chosen ahead, so that at the event the kill is only a signal.  Driven by ``tick`` and
``notify`` with fake ports and a fake clock on fixture trees."""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings

from memcgctl.actions.kill import make_killer
from memcgctl.daemon import choosing
from memcgctl.daemon.choosing import PLAN_COST, PLAN_MIN_PERIOD, PLAN_REFUSED_RETRY
from memcgctl.daemon.core import HOLD_S, QUIET_S, DaemonCore, Settings, with_process
from memcgctl.daemon.ports import STAMP_MAX_CGROUPS, RealPorts, procs_stamp
from memcgctl.daemon.protocol import Mode, Reading
from memcgctl.daemon.treewatch import TreeWatch
from memcgctl.daemon.valve import CLEAR, SHORT
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.cgrouptree import READS_PER_CALL
from memcgctl.logic.decision import Decision
from memcgctl.logic.priority import (
    LISTED_EMPTY,
    plan_inputs,
    select_priority,
    select_priority_brief,
)
from memcgctl.snapshot import LazyCgroups
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.errors import OverBudget
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
    debug: Callable[[str, Scope, dict[str, Any]], None] | None = None,
) -> tuple[FakePorts, DaemonCore, Clock, CountingSelect]:
    clock = Clock()
    choose = CountingSelect(clock, cost)
    ports = ports_type(host, {"/jobs": delay}, mode=mode)
    core = DaemonCore(ports, choose, Settings(), clock=clock, debug=debug)
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


def test_a_plan_chosen_after_a_stop_is_as_old_as_its_choice(fake_v1: FakeHost) -> None:
    """The loop read its clock (1.0), then the daemon was stopped for 5 s; the tick
    with that time chooses at 6.0: the plan's age at the event counts from 6.0."""
    ports, core, clock, choose = daemon(jobs(fake_v1))
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    clock.t = 6.0  # SIGSTOP ... SIGCONT between the loop's look at the clock and the tick
    core.tick(1.0)
    assert core.watches[JOBS].plan is not None
    ports.oom.add("/jobs")
    core.notify(JOBS, at(clock, 6.02))
    assert ports.killed == [10] and kill_record(ports)["plan_age_ms"] == pytest.approx(20.0)
    assert choose.calls == 1  # the plan was used: nothing chosen at the event


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
    """A victim still listed in its cgroup but already dying (its memory gone) holds
    the plan's check; its kill is refused (the real ports: one of ours is never sent
    twice; one that has died, ESRCH through the pidfd pinned with the plan), and the
    victim is chosen afresh, with no status read on the way."""
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


# -- a tenant's thousands of empty cgroups (STAMP_MAX_CGROUPS) ------------------------------


def tenant_tree(host: FakeHost, empties: int, depth: int = 1) -> FakeHost:
    """jobs() with ``empties`` empty cgroups ranked before the victim's (badness 10 <
    100: the walk skips each for holding nothing, and a process arriving there would
    win), each a chain ``depth`` deep: what a delegated user can make."""
    host = jobs(host)
    for n in range(empties):
        path = f"/jobs/e{n:04d}"
        host.cgroup(path, badness=10)
        for _ in range(depth - 1):
            path += "/d"
            host.cgroup(path)
    return host


def test_a_plan_within_the_stamp_cap_holds_as_before(fake_v1: FakeHost) -> None:
    empties = STAMP_MAX_CGROUPS // 2 - 2  # with the two levels: within the cap
    ports, core, clock, choose = daemon(tenant_tree(fake_v1, empties, depth=2))
    near_and_planned(ports, core, clock)
    plan = core.watches[JOBS].plan
    assert plan is not None
    assert sum(whole for _, whole in plan_inputs(plan)) == empties
    the_event(ports, core, clock, 1.01)
    assert ports.killed == [10] and choose.calls == 1
    assert kill_record(ports)["plan_age_ms"] == 10.0


@pytest.mark.parametrize(("empties", "depth"), [(STAMP_MAX_CGROUPS, 1), (1, STAMP_MAX_CGROUPS)])
def test_a_plan_beyond_the_stamp_cap_is_not_kept_and_the_event_chooses_afresh(
    fake_v1: FakeHost, empties: int, depth: int
) -> None:
    """Many empty cgroups ranked first, or one nested deeper than the cap: no plan is
    kept (it would take reading them all to check it); at the event the victim is the
    one a fresh choice takes, and no plan is said to be used."""
    host = tenant_tree(fake_v1, empties, depth)
    ports, core, clock, choose = daemon(host)
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    core.tick(at(clock, 1.0))
    assert choose.calls == 1 and ports.stamps == 1 and core.watches[JOBS].plan is None
    core.tick(at(clock, 1.5))
    assert choose.calls == 1  # tried again no sooner than a second later
    the_event(ports, core, clock, 1.6)
    fresh = select_priority_brief(host.env().snapshot(JOBS, lazy=True), JOBS, ())
    assert fresh.victim is not None and ports.killed == [fresh.victim.pid] == [10]
    assert "plan_age_ms" not in kill_record(ports) and choose.calls == 2


class CountingFs:
    """A cgroup fs whose ``procs`` reads are counted."""

    def __init__(self, fs: CgroupFs) -> None:
        self.fs = fs
        self.reads = 0

    def procs(self, cg: CgroupPath) -> list[int]:
        self.reads += 1
        return self.fs.procs(cg)

    def walk(self, cg: CgroupPath) -> Iterable[CgroupPath]:
        return self.fs.walk(cg)


@pytest.mark.parametrize(("empties", "depth"), [(300, 1), (1, 300), (20, 20)])
def test_a_stamp_reads_at_most_the_cap_however_big_the_tenants_tree(
    fake_v1: FakeHost, empties: int, depth: int
) -> None:
    host = tenant_tree(fake_v1, empties, depth)
    snap = host.env().snapshot(JOBS, lazy=True)
    decision = select_priority(snap, JOBS, ())  # the full walk lists every empty one
    inputs = plan_inputs(decision)
    assert decision.victim is not None and decision.victim.pid == 10
    brief = select_priority_brief(host.env().snapshot(JOBS, lazy=True), JOBS, ())
    assert brief.victim == decision.victim
    if depth == 1 and empties > LISTED_EMPTY:  # the brief walk: the rest by the probe
        assert sum(lv.unlisted for lv in brief.walk) == empties - LISTED_EMPTY
        assert plan_inputs(brief) == ()
    else:
        assert plan_inputs(brief) == inputs
    fs = CountingFs(host.env().fs)
    assert procs_stamp(fs, inputs) is None  # type: ignore[arg-type]
    assert fs.reads == STAMP_MAX_CGROUPS  # it stopped at the first cgroup beyond
    fs.reads = 0
    whole = procs_stamp(fs, inputs, limit=10_000)  # type: ignore[arg-type]
    assert whole is not None and fs.reads == 2 + empties * depth  # the levels + the tenant's


def real_ports(host: FakeHost, tmp_path: Path) -> RealPorts:
    env = host.env()
    return RealPorts(
        env,
        make_killer(env.proc_root, env.fs, env.proc),
        Journal(tmp_path / "state"),
        log=io.StringIO(),
    )


def test_real_ports_keep_no_stamp_beyond_the_cap_and_check_a_moved_mark_without_reading(
    fake_v1: FakeHost, tmp_path: Path
) -> None:
    """RealPorts on a fixture tree with its inotify tree watch: a stamp within the cap
    is kept and holds; one beyond it is None; at the event a mark moved by a change in
    the domain fails the plan before any cgroup.procs is read."""
    host = tenant_tree(fake_v1, 3)
    env = host.env()
    ports = real_ports(host, tmp_path)
    ports.tree = TreeWatch(env.fs, CgroupPath("/"), lambda *_: None)
    try:
        ports.tree.refresh()
        decision = select_priority_brief(env.snapshot(JOBS, lazy=True), JOBS, ())
        stamp = ports.plan_stamp(decision)
        assert stamp is not None and ports.plan_holds(decision, stamp)
        counting = CountingFs(env.fs)
        ports.fs = counting  # type: ignore[assignment]
        host.cgroup("/jobs/e9999", badness=10)  # the tenant makes one more
        ports.tree.pump()
        assert ports.tree.mark(JOBS) not in (None, stamp[0])  # type: ignore[index]
        assert not ports.plan_holds(decision, stamp) and counting.reads == 0
        ports.fs = env.fs
        for n in range(STAMP_MAX_CGROUPS):
            host.cgroup(f"/jobs/f{n:04d}", badness=10)
        for _ in range(100):  # every event read: the mark can be told again
            ports.tree.pump()
            if ports.tree.mark(JOBS) is not None:
                break
        assert ports.tree.mark(JOBS) is not None
        big = select_priority_brief(env.snapshot(JOBS, lazy=True), JOBS, ())
        assert big.victim is not None and big.victim.pid == 10
        # the brief walk skipped the empty ones beyond LISTED_EMPTY unlisted: no inputs
        assert sum(lv.unlisted for lv in big.walk) > 0 and plan_inputs(big) == ()
        assert ports.plan_stamp(big) is None
        listed = select_priority(env.snapshot(JOBS, lazy=True), JOBS, ())  # every one
        assert len(plan_inputs(listed)) > STAMP_MAX_CGROUPS
        assert ports.plan_stamp(listed) is None
    finally:
        ports.tree.close()


def test_a_choice_over_a_tenants_thousands_of_cgroups_beats_the_heartbeat(
    fake_v1: FakeHost, tmp_path: Path
) -> None:
    """A choice that reads many cgroups (each empty one ranked first is read to learn
    it is empty) calls the ports' beat as it reads, and only that: a long choice is not
    taken for a hang by the guardian (in the v2 guest, 2,000 cgroups took it past the
    heartbeat's 2.5 s and the guardian released the memcg to the kernel's OOM killer)."""
    host = tenant_tree(fake_v1, 600)
    ports = real_ports(host, tmp_path)
    beats: list[int] = []
    pulses: list[int] = []
    ports.beat = lambda: beats.append(1)
    ports.pulse = lambda: pulses.append(1)
    decision = select_priority_brief(ports.snapshot(JOBS), JOBS, ())
    assert decision.victim is not None and decision.victim.pid == 10
    # each empty cgroup costs one file read at least (its usage): a beat every READS_PER_CALL
    assert len(beats) >= 600 // READS_PER_CALL and pulses == []  # no loop work


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


def quiet_kill(
    fake_v1: FakeHost, debug: Callable[[str, Scope, dict[str, Any]], None] | None = None
) -> tuple[LookingPorts, DaemonCore, Clock]:
    """A standing plan used at the event (1.03 s); the victim (pid 10) exits only once
    the test says so.  ``debug``: the core's debug lines."""
    ports, core, clock, _ = daemon(jobs(fake_v1), ports_type=LookingPorts, debug=debug)
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


def test_a_victim_that_does_not_exit_holds_the_looks_back_briefly_the_records_longer(
    fake_v1: FakeHost,
) -> None:
    ports, core, clock = quiet_kill(fake_v1)
    looks = ports.looks
    core.tick(at(clock, 1.03 + QUIET_S - 0.001))
    assert "daemon_kill" not in ports.kinds() and ports.looks == looks
    assert core.tick(at(clock, 1.03 + QUIET_S)) is not None
    assert ports.looks == looks + 1  # looked at again (the freeze line)
    assert ports.reaped == [10]  # still exiting: its memory is given back from here
    # its records wait for its exit a while longer (they would take the CPU it needs)
    assert "daemon_kill" not in ports.kinds() and ports.held is not None
    core.notify(JOBS, at(clock, 1.03 + HOLD_S - 0.001))  # the valve fired: looked at
    assert ports.looks > looks + 1 and "daemon_kill" not in ports.kinds()
    assert core.tick(at(clock, 1.03 + HOLD_S - 0.001)) == pytest.approx(1.03 + HOLD_S)
    core.tick(at(clock, 1.03 + HOLD_S))
    assert ports.kinds()[-2:] == ["under_oom", "daemon_kill"] and ports.held is None
    assert ports.reaped == [10]  # reaped once
    # the episode goes on as before: looked at again soon, the next round at the grace
    assert core.watches[JOBS].next_check is not None
    ports.dead.add(10)
    core.tick(at(clock, 1.03 + core.settings.grace + 0.01))
    assert core.watches[JOBS].rounds == 2 and ports.killed == [10, 11]


def test_a_victim_that_exits_after_the_quiet_has_its_records_written_then(
    fake_v1: FakeHost,
) -> None:
    """The kill's debug line says when the loop saw the exit and whether the victim was
    reaped first (bench/scale_v2_bench.py reads it)."""
    lines: list[tuple[str, dict[str, Any]]] = []
    ports, core, clock = quiet_kill(fake_v1, debug=lambda kind, _, f: lines.append((kind, f)))
    core.tick(at(clock, 1.03 + QUIET_S))  # the quiet's end: reaped, looked at
    assert ports.reaped == [10] and "daemon_kill" not in ports.kinds() and lines == []
    ports.dead.add(10)  # it exits at 20 ms: its pidfd wakes the loop
    core.tick(at(clock, 1.05))
    assert ports.kinds()[-2:] == ["under_oom", "daemon_kill"] and ports.held is None
    assert lines == [
        (
            "kill_path",
            {
                "level_ms": 0.0,
                "check_ms": 0.0,
                "signal_ms": 0.0,
                "exit_ms": pytest.approx(20.0),
                "reaped": True,
            },
        )
    ]


class SlowSignalPorts(LookingPorts):
    """The signal goes 4 ms after the event (the look and the plan's check took that)."""

    clock: Clock | None = None

    def kill(self, decision: Decision) -> list[int]:
        assert self.clock is not None
        self.clock.t += 0.004
        return super().kill(decision)


def test_the_quiet_after_a_kill_counts_from_the_signal_not_the_event(
    fake_v1: FakeHost,
) -> None:
    ports, core, clock, _ = daemon(jobs(fake_v1), ports_type=SlowSignalPorts)
    assert isinstance(ports, SlowSignalPorts)
    ports.clock, ports.slow_exit = clock, True
    near_and_planned(ports, core, clock, t=1.0)
    ports.oom.add("/jobs")
    core.notify(JOBS, at(clock, 1.03))
    assert ports.killed == [10] and clock.t == pytest.approx(1.034)  # the signal
    looks = ports.looks
    core.tick(at(clock, 1.03 + QUIET_S + 0.001))  # the event's quiet would be over
    assert ports.reaped == [] and ports.looks == looks
    core.tick(at(clock, 1.034 + QUIET_S))
    assert ports.reaped == [10] and ports.looks == looks + 1
    assert core.watches[JOBS].hold_until == pytest.approx(1.034 + HOLD_S)
    assert "daemon_kill" not in ports.kinds()
    core.tick(at(clock, 1.034 + HOLD_S))
    assert ports.kinds()[-2:] == ["under_oom", "daemon_kill"]


def test_a_victim_that_exits_at_once_says_so_in_the_kills_debug_line(
    fake_v1: FakeHost,
) -> None:
    lines: list[tuple[str, dict[str, Any]]] = []
    ports, core, clock, _ = daemon(
        jobs(fake_v1), ports_type=SlowSignalPorts, debug=lambda k, _, f: lines.append((k, f))
    )
    assert isinstance(ports, SlowSignalPorts)
    ports.clock = clock  # the signal 4 ms after the event; the victim gone by its return
    near_and_planned(ports, core, clock, t=1.0)
    ports.oom.add("/jobs")
    core.notify(JOBS, at(clock, 1.03))
    assert ports.kinds()[-2:] == ["under_oom", "daemon_kill"]  # nothing held
    assert [k for k, _ in lines] == ["kill_path"]
    assert lines[0][1]["exit_ms"] == 0.0 and lines[0][1]["reaped"] is False


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


def test_a_refused_plan_is_not_chosen_again_while_the_domains_tree_is_unchanged(
    fake_v1: FakeHost,
) -> None:
    """A tenant's empty cgroups ranked first make the plan uncheckable (more than the
    stamp's cap): none is kept, and the watch is not chosen again — the single loop is
    not held by a choice over the tenant's tree every second — until the tree watch's
    mark moves (a cgroup made or removed, a badness written) or PLAN_REFUSED_RETRY has
    passed (processes moved in, which the mark does not see).  The victim is chosen at
    the event, the same one."""
    ports, core, clock, choose = daemon(tenant_tree(fake_v1, STAMP_MAX_CGROUPS + 10))
    refused: list[tuple[str, Scope, dict[str, object]]] = []
    core.chooser.debug = lambda kind, cg, fields: refused.append((kind, cg, fields))
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    core.tick(at(clock, 1.0))
    assert choose.calls == 1 and core.watches[JOBS].plan is None
    assert [(k, cg, f["why"]) for k, cg, f in refused] == [("plan_refused", JOBS, "stamp")]
    t = 1.0
    while t < 20.0:  # near for 19 s, the loop waking every 50 ms
        t += 0.05
        core.tick(at(clock, t))
    assert choose.calls == 1 and core.chooser.skipped >= 18  # looked at once a second
    ports.tree_mark += 1  # the tenant made or removed a cgroup, or wrote a badness
    core.tick(at(clock, t + 1.0))
    assert choose.calls == 2 and len(refused) == 2
    core.tick(at(clock, t + 1.0 + PLAN_REFUSED_RETRY - 0.5))
    assert choose.calls == 2
    core.tick(at(clock, t + 1.0 + PLAN_REFUSED_RETRY + 0.5))  # the retry
    assert choose.calls == 3 and core.watches[JOBS].plan is None
    the_event(ports, core, clock, t + 40.0)
    assert ports.killed == [10] and choose.calls == 4
    assert "plan_age_ms" not in kill_record(ports)


def test_refusals_do_not_outlive_their_retry_once_many_are_kept(fake_v1: FakeHost) -> None:
    """Managed memcgs come and go (a node's pods): once REFUSED_KEPT refusals are
    remembered, a new one drops those past their retry; one still standing stays."""
    ports, core, clock, _ = daemon(tenant_tree(fake_v1, STAMP_MAX_CGROUPS + 10))
    standing = CgroupPath("/standing")
    core.chooser.refused[standing] = (0, 1.0 + PLAN_REFUSED_RETRY)
    for n in range(choosing.REFUSED_KEPT):
        core.chooser.refused[CgroupPath(f"/gone{n}")] = (0, 0.5)  # its retry has passed
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    core.tick(at(clock, 1.0))
    assert core.watches[JOBS].plan is None
    assert set(core.chooser.refused) == {standing, JOBS}


def test_a_refusal_ends_when_a_plan_can_be_kept_again(fake_v1: FakeHost) -> None:
    """The tenant removes its cgroups (the mark moves): the next refresh keeps a plan,
    used at the event."""
    host = tenant_tree(fake_v1, STAMP_MAX_CGROUPS + 10)
    ports, core, clock, choose = daemon(host)
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    core.tick(at(clock, 1.0))
    assert core.watches[JOBS].plan is None and JOBS in core.chooser.refused
    for n in range(STAMP_MAX_CGROUPS + 10):
        shutil.rmtree(host.path(f"/jobs/e{n:04d}"))
    ports.tree_mark += 1
    core.tick(at(clock, 2.5))
    assert choose.calls == 2 and core.watches[JOBS].plan is not None
    assert JOBS not in core.chooser.refused
    the_event(ports, core, clock, 2.51)
    assert ports.killed == [10] and choose.calls == 2
    assert "plan_age_ms" in kill_record(ports)


def test_a_refresh_looks_at_no_more_cgroups_than_its_budget(
    fake_v1: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh's choice stops at REFRESH_MAX_LOOKS cgroups looked at (the lazy
    snapshot's budget): no plan, said as ``why=looks``, and not chosen again while the
    mark stands.  The event's choice has no budget: the same victim."""
    monkeypatch.setattr(choosing, "REFRESH_MAX_LOOKS", 40)
    ports, core, clock, _ = daemon(tenant_tree(fake_v1, STAMP_MAX_CGROUPS + 10))
    looked: list[int] = []
    real = ports.snapshot

    def snapshot(cg: CgroupPath, budget: int | None = None) -> Snapshot:
        snap = real(cg, budget=budget)
        looked.append(-1 if budget is None else budget)
        return snap

    ports.snapshot = snapshot  # type: ignore[method-assign]
    refused: list[dict[str, object]] = []
    core.chooser.debug = lambda kind, cg, fields: refused.append(fields)
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    core.tick(at(clock, 1.0))
    assert looked == [40] and core.watches[JOBS].plan is None
    assert [f["why"] for f in refused] == ["looks"]
    core.tick(at(clock, 5.0))
    assert looked == [40]  # the mark stands
    the_event(ports, core, clock, 5.01)
    assert ports.killed == [10] and looked == [40, -1]


def test_a_lazy_snapshots_budget_counts_every_cgroup_looked_at(fake_v1: FakeHost) -> None:
    """Each probe (badness, usage) and each cgroup read in full counts once; beyond the
    budget OverBudget is raised before reading; within it, the same victim."""
    host = tenant_tree(fake_v1, 30)
    env = host.env()
    free = select_priority_brief(env.snapshot(JOBS, lazy=True), JOBS, ())
    snap = env.snapshot(JOBS, lazy=True, budget=10_000)
    assert select_priority_brief(snap, JOBS, ()).victim == free.victim
    cgroups = snap.cgroups
    assert isinstance(cgroups, LazyCgroups)
    left = cgroups.budget_left()
    assert left is not None
    looks = 10_000 - left
    assert looks >= 30  # every empty cgroup: a badness, a usage, a read in full
    with pytest.raises(OverBudget):
        select_priority_brief(env.snapshot(JOBS, lazy=True, budget=looks - 1), JOBS, ())
    again = env.snapshot(JOBS, lazy=True, budget=looks)
    assert select_priority_brief(again, JOBS, ()).victim == free.victim


def test_shadow_modes_victim_put_back_is_not_passed_over_by_the_emptiness_probe(
    fake_v1: FakeHost,
) -> None:
    """Shadow mode compares the kernel's victim with the policy's in the world with it put
    back (core.with_process): its cgroup, empty now, must not be told empty by the lazy
    snapshot's probe (which reads the cgroup as it is)."""
    fake_v1.cgroup("/jobs", limit=512 << 20)
    fake_v1.cgroup("/jobs/a", badness=10, usage=1 << 20)
    fake_v1.cgroup("/jobs/a/x", usage=1 << 20)
    fake_v1.cgroup("/jobs/b", badness=900, usage=1 << 20)
    fake_v1.process(10, "/jobs/a/x", rss_anon_kb=1000)
    fake_v1.process(20, "/jobs/b", rss_anon_kb=1000)
    victim = fake_v1.env().snapshot(JOBS).processes[10]
    fake_v1.remove_process(10)  # the kernel killed it
    lazy = fake_v1.env().snapshot(JOBS, lazy=True)
    assert lazy.holds_nothing(CgroupPath("/jobs/a/x"))
    d = select_priority_brief(with_process(lazy, victim), JOBS, ())
    assert d.victim is not None and d.victim.pid == 10


def test_a_refusal_during_a_change_is_not_remembered(fake_v1: FakeHost) -> None:
    """The domain's tree changed while the refresh chose (the mark before the choice is
    not the mark after the stamp): the refusal may rest on a passing state, so the next
    refresh chooses again."""

    class Moving(FakePorts):
        def plan_stamp(self, decision: Decision) -> Hashable | None:
            self.tree_mark += 1  # e.g. the tenant's rmdir, read while stamping
            return super().plan_stamp(decision)

    ports, core, clock, choose = daemon(
        tenant_tree(fake_v1, STAMP_MAX_CGROUPS + 10), ports_type=Moving
    )
    ports.near.add("/jobs")
    core.rescan(at(clock, 1.0))
    core.tick(at(clock, 1.0))
    assert choose.calls == 1 and JOBS not in core.chooser.refused
    core.tick(at(clock, 2.5))
    assert choose.calls == 2
