"""The standing plan's kill against the real kernel (issue 22, the event to the signal):
the plan's victim is pinned by a pidfd when it is chosen; at the event the plan's check
reads it in its cgroup's ``cgroup.procs`` (v2: kept open since the plan) and the kill
is only the signal, through that pidfd: no ``/proc/PID/status``, no
``/proc/PID/cgroup``, no ``pidfd_open``.  A victim
that moved to another cgroup or died between the plan and the event is not killed; the
policy's victim of that moment is.  The daemon's core drives the real ports (real
cgroups, processes, pidfds, the inotify tree watch); only the level is the test's, so
that the event comes when the test says, between two refreshes of the plan.

Imported by tests/v2/test_plan_pin_v2.py, which adds the pid reused in the guest."""

from __future__ import annotations

import io
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from memcgctl.actions.kill import make_killer
from memcgctl.daemon.core import DaemonCore, Settings
from memcgctl.daemon.ports import RealPorts
from memcgctl.daemon.protocol import Managed, Mode, Reading
from memcgctl.daemon.treewatch import TreeWatch
from memcgctl.daemon.valve import CLEAR, SHORT, OomLevel
from memcgctl.env import Env
from memcgctl.kernel.procfs import ProcStatus
from memcgctl.logic.priority import select_priority_brief
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import CgroupPath, Scope
from tests.realkernel import TestCgroups

pytestmark = pytest.mark.kernel


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


class TestLevelPorts(RealPorts):
    """The real ports, but the level is the test's and nothing is held back: the core's
    way from the event to the signal runs on real cgroups and processes without a real
    OOM.  Counts the reads a kill could make of the victim in /proc."""

    __test__ = False

    def __init__(self, env: Env, journal: Journal, root: CgroupPath, managed: CgroupPath) -> None:
        super().__init__(env, make_killer(env.proc_root, env.fs, env.proc), journal, root=root)
        self.recorder.log = io.StringIO()
        self.managed_cg = managed
        self.state: OomLevel = CLEAR
        self.near_line = False
        self.status_reads: list[int] = []
        self.cgroup_reads: list[int] = []
        status, cgroup_of = self.proc.status, self.kills.killer.cgroup_of

        def counted_status(pid: int) -> ProcStatus:
            self.status_reads.append(pid)
            return status(pid)

        def counted_cgroup_of(pid: int) -> str:
            self.cgroup_reads.append(pid)
            return cgroup_of(pid)

        self.proc.status = counted_status  # type: ignore[method-assign]
        self.kills.killer.cgroup_of = counted_cgroup_of  # type: ignore[method-assign]

    def managed(self) -> dict[Scope, int]:
        return {self.managed_cg: 0}

    def take_over(self, cg: Scope) -> Managed | None:
        assert isinstance(cg, CgroupPath)
        return Managed(Mode.VALVE, cg)  # no valve written: the level is the test's

    def level(self, cg: Scope) -> Reading:
        return Reading(self.state, 0.01, near=self.near_line)

    def text(self) -> str:
        log = self.recorder.log
        assert isinstance(log, io.StringIO)
        return log.getvalue()


@dataclass
class Setup:
    cgroups: TestCgroups
    ports: TestLevelPorts
    core: DaemonCore
    clock: Clock
    big: subprocess.Popen[bytes]  # the policy's victim: the biggest in the lowest badness
    small: subprocess.Popen[bytes]  # the next one there
    other: subprocess.Popen[bytes]  # in the cgroup ranked after
    jobs: CgroupPath
    low: str
    elsewhere: str


@pytest.fixture
def planned(cgroups: TestCgroups, tmp_path: Path) -> Iterator[Setup]:
    """jobs (delay 0) holds low (badness 100: a 16 MiB and a 4 MiB process) and high
    (badness 900); near its line, the plan is chosen: the 16 MiB process, pinned."""
    top = cgroups.make("jobs", limit=128 << 20)
    low = cgroups.make("jobs/low", limit=None)
    high = cgroups.make("jobs/high", limit=None)
    elsewhere = cgroups.make("elsewhere", limit=64 << 20)
    for cg, badness in ((low, b"100"), (high, b"900")):
        os.setxattr(cgroups.path(cg), "trusted.memcgctl.badness", badness)
    big, small, other = cgroups.hog(low, 16), cgroups.hog(low, 4), cgroups.hog(high, 4)
    env = Env(cgroup_root=cgroups.mount, state_dir=tmp_path / "state")
    jobs = CgroupPath(top)
    ports = TestLevelPorts(env, Journal(tmp_path / "state"), CgroupPath(cgroups.parent), jobs)
    ports.tree = TreeWatch(env.fs, CgroupPath(cgroups.parent), lambda *_: None)
    clock = Clock()
    core = DaemonCore(ports, select_priority_brief, Settings(), clock=clock)
    try:
        ports.tree.refresh()
        core.rescan(0.0)
        ports.near_line = True
        clock.t = 1.0
        core.rescan(1.0)
        core.tick(1.0)  # near: the victim is chosen ahead
        plan = core.watches[jobs].plan
        assert plan is not None and plan.victim is not None and plan.victim.pid == big.pid
        assert core.watches[jobs].plan_stamp is not None
        yield Setup(cgroups, ports, core, clock, big, small, other, jobs, low, elsewhere)
    finally:
        core.release_all()
        ports.close_all()
        ports.tree.close()
        ports.close_journal()


def the_event(s: Setup, t: float) -> None:
    """The valve's event, then the loop's next turn (and the victim's exit)."""
    s.ports.state = SHORT
    s.clock.t = t
    s.core.notify(s.jobs, t)
    s.core.tick(t)


def killed(s: Setup, p: subprocess.Popen[bytes]) -> bool:
    """p died of SIGKILL; then the loop's next turn writes what the kill held back."""
    dead = p.wait(timeout=20) == -signal.SIGKILL
    s.clock.t += 0.01
    s.core.tick(s.clock.t)
    return dead


def kill_line(s: Setup) -> str:
    return next(x for x in s.ports.text().splitlines() if "daemon_kill " in x)


def test_a_plan_that_holds_is_only_the_signal_at_the_event(planned: Setup) -> None:
    s = planned
    s.ports.status_reads.clear()
    the_event(s, 1.01)
    assert killed(s, s.big)
    line = kill_line(s)
    assert f" pid={s.big.pid} " in line and " plan_age_ms=" in line, s.ports.text()
    # the plan's check read the victim in its cgroup after its pin: nothing else of it
    assert s.ports.status_reads == [] and s.ports.cgroup_reads == []
    assert s.small.poll() is None and s.other.poll() is None


def test_a_victim_moved_out_since_the_plan_is_not_killed(planned: Setup) -> None:
    """A tenant may move its processes: the plan's victim left for another cgroup
    between the plan and the event.  It lives; the policy's victim now dies."""
    s = planned
    TestCgroups.write(s.cgroups.path(s.elsewhere), "cgroup.procs", str(s.big.pid))
    the_event(s, 1.01)
    assert killed(s, s.small)
    line = kill_line(s)
    assert f" pid={s.small.pid} " in line and " plan_age_ms=" not in line, s.ports.text()
    assert s.big.poll() is None and s.other.poll() is None
    assert s.cgroups.pids(s.elsewhere) == [s.big.pid]


def test_a_victim_that_died_since_the_plan_is_passed_over(planned: Setup) -> None:
    s = planned
    s.big.kill()
    s.big.wait(timeout=20)
    the_event(s, 1.01)
    assert killed(s, s.small)
    line = kill_line(s)
    assert f" pid={s.small.pid} " in line and " plan_age_ms=" not in line, s.ports.text()
    assert s.other.poll() is None


def test_the_pin_goes_with_the_plan(planned: Setup) -> None:
    """One pidfd per managed memcg, on the plan's victim; chosen again with another
    victim, the pin follows it; released, none is left."""
    s = planned
    assert s.ports.kills.pinned() == {s.jobs: s.big.pid}
    # v2: the cgroup.procs its check reads at the event are kept open (v1: its pidlist
    # cache could give an open file a list up to a second old)
    levels = {s.jobs, CgroupPath(s.low)} if s.ports.fs.version == 2 else set()
    assert {cg for cg, name in s.ports.fs.kept() if name == "cgroup.procs"} == levels
    TestCgroups.write(s.cgroups.path(s.elsewhere), "cgroup.procs", str(s.big.pid))
    assert s.ports.tree is not None
    s.ports.tree.pump()  # a move is no change of the tree: the refresh sees it
    s.clock.t = 2.0
    s.core.tick(2.0)  # the refresh: chosen again
    plan = s.core.watches[s.jobs].plan
    assert plan is not None and plan.victim is not None and plan.victim.pid == s.small.pid
    assert s.ports.kills.pinned() == {s.jobs: s.small.pid}
    s.core.release_watches("test")
    assert s.ports.kills.pinned() == {} and s.ports.fs.kept() == set()


def test_only_the_checked_decision_is_signalled_without_a_membership_read(
    planned: Setup,
) -> None:
    """The check's read vouches for the decision it checked: another decision with the
    same victim (chosen afresh) is read in its cgroup again before its signal."""
    s = planned
    w = s.core.watches[s.jobs]
    assert w.plan is not None and w.plan_stamp is not None
    assert s.ports.plan_holds(w.plan, w.plan_stamp)
    fresh = select_priority_brief(s.ports.snapshot(s.jobs), s.jobs, ())
    assert fresh.victim is not None and fresh.victim.pid == s.big.pid and fresh is not w.plan
    assert s.ports.kill(fresh) == [s.big.pid]
    assert s.ports.cgroup_reads == [s.big.pid]
    assert s.big.wait(timeout=20) == -signal.SIGKILL
    assert s.small.poll() is None
