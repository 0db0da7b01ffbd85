"""The daemon core driven by ``tick`` with fake ports on fixture trees."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from memcgctl.daemon.core import DaemonCore, Settings, lowest_priority_child
from memcgctl.model import Snapshot
from memcgctl.policy import Decision, select_priority
from tests.fakehost import FakeHost


class FakePorts:
    def __init__(self, host: FakeHost, delays: dict[str, int], mode: str = "oom") -> None:
        self.host = host
        self.delays = dict(delays)
        self.mode = mode
        self.oom: set[str] = set()
        self.not_at_limit: set[str] = set()
        self.taken: list[str] = []
        self.released: list[str] = []
        self.killed: list[int] = []
        self.killed_all: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.dead: set[int] = set()
        self.refuse: set[str] = set()

    def managed(self) -> dict[str, int]:
        return dict(self.delays)

    def take_over(self, cg: str, adopt_under_oom: bool) -> str | None:
        if cg in self.refuse:
            return None
        self.taken.append(cg)
        return self.mode

    def release(self, cg: str) -> None:
        self.released.append(cg)

    def under_oom(self, cg: str) -> bool:
        return cg in self.oom

    def at_limit(self, cg: str) -> bool:
        return cg not in self.not_at_limit

    def snapshot(self, cg: str) -> Snapshot:
        return self.host.env().snapshot(cg)

    def kill(self, decision: Decision) -> list[int]:
        assert decision.victim is not None
        pids = list(decision.group_pids) or [decision.victim.pid]
        self.killed += pids
        return pids

    def kill_all(self, cg: str) -> list[int]:
        self.killed_all.append(cg)
        return [p.pid for p in self.snapshot(cg).subtree_processes(cg)]

    def alive(self, pids: Iterable[int]) -> list[int]:
        return [p for p in pids if p not in self.dead]

    def emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.events]


def select(snap: Snapshot, root: str, exclude: Iterable[int]) -> Decision:
    return select_priority(snap, root, exclude)


def oom_at(
    host: FakeHost, t: float, settings: Settings | None = None
) -> tuple[FakePorts, DaemonCore]:
    """/jobs managed with delay 0 goes under OOM at time t; the core has ticked once."""
    ports = FakePorts(host, {"/jobs": 0})
    core = DaemonCore(ports, select, settings or Settings())
    core.rescan(0.0)
    ports.oom.add("/jobs")
    core.notify("/jobs", t)
    core.tick(t)
    return ports, core


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    fake_v1.cgroup("/jobs", limit=256 << 20, delay_ms=2000)
    fake_v1.cgroup("/jobs/low", badness=100, usage=10 << 20)
    fake_v1.cgroup("/jobs/high", badness=900, usage=200 << 20)
    fake_v1.process(10, "/jobs/low", comm="small", rss_anon_kb=10_000)
    fake_v1.process(11, "/jobs/low", comm="smaller", rss_anon_kb=5_000)
    fake_v1.process(20, "/jobs/high", comm="big", rss_anon_kb=200_000)
    return fake_v1


def test_waits_for_the_delay_then_kills_the_priority_victim(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 2000})
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    assert ports.taken == ["/jobs"]
    ports.oom.add("/jobs")
    core.notify("/jobs", 1.0)
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
    core.notify("/jobs", 1.0)
    ports.oom.clear()  # someone raised the limit
    core.tick(2.0)
    core.tick(5.0)
    assert ports.killed == []
    resolved = ports.events[-1]
    assert (resolved["kind"], resolved["by"], resolved["kills"]) == ("oom_resolved", "userspace", 0)


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
    core.notify("/jobs", 0.0)
    core.tick(0.0)
    assert ports.killed == [] and "under_oom" not in ports.kinds()


def test_nested_managed_memcgs_the_outer_episode_wins(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 1000, "/jobs/low": 0})
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    ports.oom.update({"/jobs", "/jobs/low"})  # the kernel marks the subtree under OOM
    core.notify("/jobs", 0.0)
    core.notify("/jobs/low", 0.0)
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


def test_psi_pressure_longer_than_delay_kills(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 1000}, mode="psi")
    core = DaemonCore(ports, select, Settings(pressure_window=1.0))
    core.rescan(0.0)
    for t in (0.0, 0.5, 0.9):
        core.notify("/jobs", t)
        core.tick(t)
    assert ports.killed == []
    core.notify("/jobs", 1.0)
    core.tick(1.0)
    assert ports.killed == [10]


def test_psi_pressure_that_stops_ends_the_episode(host: FakeHost) -> None:
    ports = FakePorts(host, {"/jobs": 1000}, mode="psi")
    core = DaemonCore(ports, select, Settings(pressure_window=0.3))
    core.rescan(0.0)
    core.notify("/jobs", 0.0)
    core.tick(0.5)  # silent for longer than the window
    core.notify("/jobs", 0.8)
    core.tick(1.2)
    assert ports.killed == [] and "pressure_ended" in ports.kinds()


def test_lowest_priority_child(host: FakeHost) -> None:
    snap = host.env().snapshot("/jobs")
    assert lowest_priority_child(snap, "/jobs") == "/jobs/low"
    assert lowest_priority_child(snap, "/jobs/low") is None


def test_oom_back_within_the_grace_continues_the_livelock(host: FakeHost) -> None:
    ports, core = oom_at(host, 0.0, Settings(grace=0.5, max_rounds=1))
    assert ports.killed == [10]
    ports.dead.add(10)
    host.remove_process(10)
    ports.oom.clear()
    core.tick(0.01)  # the victim's death freed a little: resolved for a moment
    assert ports.events[-1]["kind"] == "oom_resolved"
    ports.oom.add("/jobs")
    core.notify("/jobs", 0.02)  # ...and OOM again at once
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
    core.notify("/jobs", 5.0)  # a new OOM long after: a new first round
    core.tick(5.0)
    assert ports.killed == [10, 11] and ports.killed_all == []


def test_psi_delay_longer_than_the_trigger_window(host: FakeHost) -> None:
    """A PSI trigger fires at most once per window (1 s here): a 3 s delay must see the
    episode through those gaps and kill at 3 s."""
    ports = FakePorts(host, {"/jobs": 3000}, mode="psi")
    core = DaemonCore(ports, select, Settings(pressure_window=2.1))
    core.rescan(0.0)
    for t in (0.0, 1.0, 2.0):
        core.notify("/jobs", t)
        core.tick(t + 0.5)
    assert ports.killed == []
    core.notify("/jobs", 3.0)
    core.tick(3.0)
    assert ports.killed == [10]


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
