"""SPEC §2.3 in the pure policy: a delegated user's ``user.*`` badness ranks only inside
its subtree (a ``user.*`` 1000 is "last inside my subtree", not "protect my subtree"),
and the daemon's no-victim path and escalation never kill what has effective badness
1000.  Fixture trees (tests/snapbuild.py, tests/fakehost.py), issue 21 items 3 and the
no-victim path."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from memcgctl.actions.kill import make_killer
from memcgctl.daemon import owner
from memcgctl.daemon.core import DaemonCore, Settings
from memcgctl.daemon.ports import RealPorts
from memcgctl.daemon.protocol import Mode
from memcgctl.daemon.valve import CRITICAL
from memcgctl.logic.priority import (
    lowest_priority_child,
    protected_pids,
    rank_priority,
    select_priority,
)
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.reasons import Skip
from tests.fakehost import FakeHost
from tests.snapbuild import P, build
from tests.test_daemon_core import FakePorts, select

USER_NEVER: dict[str, Any] = {"badness": 1000, "source": "user"}
NOBODY = 65534


def daemon_ports(host: FakeHost, tmp_path: Path) -> RealPorts:
    env = host.env()
    killer = make_killer(env.proc_root, env.fs, env.proc)
    return RealPorts(env, killer, Journal(tmp_path / "state"), instance="b/1/1", log=io.StringIO())


def issue_tree(sibling: int = 900, sibling_source: str = "trusted") -> dict[str, dict[str, Any]]:
    """Issue 21 item 3: /deleg (trusted 100, nobody's subtree) whose every cgroup says
    user 1000, beside /other (trusted ``sibling``)."""
    return {
        "/deleg": {"badness": 100, "usage": 50},
        "/deleg/a": dict(USER_NEVER, usage=30),
        "/deleg/b": dict(USER_NEVER, usage=20),
        "/deleg/a/inner": dict(USER_NEVER, usage=30),
        "/other": {"badness": sibling, "source": sibling_source, "usage": 500},
    }


PROCS = [P(10, "/deleg/a/inner", rss=30), P(11, "/deleg/b", rss=20), P(20, "/other", rss=500)]


def test_user_1000_inside_a_subtree_does_not_protect_the_subtree() -> None:
    d = select_priority(build(issue_tree(), PROCS), ROOT)
    assert d.victim is not None and d.victim.pid == 10  # inside /deleg, not /other's 20
    # the walk went /deleg (trusted 100) -> /deleg/a (larger of two user-1000s) -> inner
    assert [lvl.chosen.cgroup.path for lvl in d.walk[:3] if lvl.chosen and lvl.chosen.cgroup] == [
        "/deleg",
        "/deleg/a",
        "/deleg/a/inner",
    ]


def test_with_the_sibling_never_too_the_victim_is_still_inside_the_subtree() -> None:
    """Before: "nothing killable" anywhere, and the no-victim path kill-all'ed the domain."""
    d = select_priority(build(issue_tree(sibling=1000), PROCS), ROOT)
    assert d.victim is not None and d.victim.pid == 10
    assert 20 in protected_pids(build(issue_tree(sibling=1000), PROCS), ROOT)


def test_user_1000_ranks_last_inside_the_subtree() -> None:
    tree = {
        "/deleg": {"badness": 100},
        "/deleg/keep": dict(USER_NEVER, usage=900),
        "/deleg/cheap": {"badness": 999, "source": "user", "usage": 1},
    }
    procs = [P(10, "/deleg/keep", rss=900), P(11, "/deleg/cheap", rss=1), P(12, "/deleg", rss=5)]
    snap = build(tree, procs)
    # a process at badness 500 in /deleg goes first, then user 999, then user 1000
    assert [d.victim.pid for d in rank_priority(snap, ROOT, 5) if d.victim] == [12, 11, 10]


def test_trusted_1000_still_means_never() -> None:
    tree: dict[str, dict[str, Any]] = {
        "/deleg": {"badness": 100},
        "/deleg/a": {"badness": 1000},  # root's own "never", even inside a delegation
        "/other": {},
    }
    snap = build(tree, [P(10, "/deleg/a", rss=30), P(20, "/other", rss=5)])
    d = select_priority(snap, ROOT)
    assert d.victim is not None and d.victim.pid == 20
    skips = {c.cgroup.path: c.verdict.skip for c in d.walk[0].candidates if c.cgroup}
    assert skips[CgroupPath("/deleg")] is Skip.NOTHING_INSIDE
    assert protected_pids(snap, ROOT) == {10}


def test_user_values_never_lift_the_subtree_above_its_trusted_rank() -> None:
    """Whatever the user writes inside, its subtree dies before a sibling ranked above
    it by root; a user 0 inside only picks which of its own dies first."""
    for inside in (0, 500, 999, 1000):
        tree: dict[str, dict[str, Any]] = {
            "/deleg": {"badness": 300},
            "/deleg/x": {"badness": inside, "source": "user"},
            "/deleg/y": {"badness": 1000, "source": "user"},
            "/sib": {"badness": 301},
        }
        procs = [P(10, "/deleg/x", rss=1), P(11, "/deleg/y", rss=1), P(20, "/sib", rss=100)]
        d = select_priority(build(tree, procs), ROOT)
        assert d.victim is not None and d.victim.pid == 10, inside
        assert lowest_priority_child(build(tree, procs), ROOT) == "/deleg"


def test_process_never_inside_user_1000_stays_never() -> None:
    tree: dict[str, dict[str, Any]] = {
        "/deleg": {"badness": 100},
        "/deleg/a": dict(USER_NEVER),
        "/other": {},
    }
    procs = [P(10, "/deleg/a", rss=30, adj=-1000), P(11, "/deleg/a", rss=1, badness=1000)]
    snap = build(tree, [*procs, P(20, "/other", rss=5)])
    d = select_priority(snap, ROOT)
    assert d.victim is not None and d.victim.pid == 20
    assert protected_pids(snap, ROOT) == {10, 11}
    assert protected_pids(snap, CgroupPath("/deleg/a")) == {10, 11}


# -- the daemon's no-victim path ----------------------------------------------------------


def never_host(fake_v1: FakeHost) -> FakeHost:
    fake_v1.cgroup("/jobs", limit=256 << 20, delay_ms=0)
    fake_v1.cgroup("/jobs/keep", badness=1000, usage=100 << 20)
    fake_v1.cgroup("/jobs/low", badness=100, usage=10 << 20)
    fake_v1.process(10, "/jobs/keep", comm="never", rss_anon_kb=100_000)
    fake_v1.process(11, "/jobs/low", comm="adjnever", rss_anon_kb=5_000, oom_score_adj=-1000)
    fake_v1.process(12, "/jobs", comm="attached", rss_anon_kb=1_000, oom_score_adj=-1000)
    return fake_v1


def run_episode(host: FakeHost, until: float) -> FakePorts:
    ports = FakePorts(host, {"/jobs": 0})
    core = DaemonCore(ports, select, Settings(grace=0.5, max_rounds=2))
    core.rescan(0.0)
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 0.0)
    t = 0.0
    while t <= until:
        core.tick(t)
        t += 0.1
    return ports


def test_no_victim_kills_nothing_whose_badness_is_1000(fake_v1: FakeHost) -> None:
    ports = run_episode(never_host(fake_v1), until=5.0)
    assert ports.killed == [] and ports.killed_all == []
    kinds = ports.kinds()
    # said once for the episode, not every grace period
    assert kinds.count("no_victim") == 1 and kinds.count("daemon_escalated") == 1
    esc = next(e for e in ports.events if e["kind"] == "daemon_escalated")
    assert esc["killed"] == [] and esc["spared"] == [10, 11, 12]


def test_escalation_kills_around_a_never_process(fake_v1: FakeHost) -> None:
    """kill-all of the lowest-priority child would take a badness-1000 process with it:
    the others die one by one instead (and a target without one is killed whole)."""
    host = never_host(fake_v1)
    host.process(13, "/jobs/low", comm="big", rss_anon_kb=50_000)
    host.process(14, "/jobs/low", comm="small", rss_anon_kb=1_000)
    ports = FakePorts(host, {"/jobs": 0})
    core = DaemonCore(ports, select, Settings(grace=0.5, max_rounds=1))
    core.rescan(0.0)
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 0.0)
    core.tick(0.0)
    assert ports.killed == [13]  # the policy's victim
    ports.dead.add(13)
    host.remove_process(13)
    core.tick(0.5)  # still short after the grace: escalate to /jobs/low
    assert ports.killed_all == [] and ports.killed == [13, 14]
    esc = ports.events[-1]
    assert (esc["kind"], esc["target"], esc["spared"]) == ("daemon_escalated", "/jobs/low", [11])


# -- the OOM domain of a user.* delay (issue 21 item 2) -------------------------------------


def delegated_v2(host: FakeHost, deleg_limit: int | None) -> FakeHost:
    """/shared (root's, memory.max 256M, root's process) > /shared/deleg (nobody's
    delegation) > /shared/deleg/job (nobody's, user.memcgctl.oom_delay_ms=0)."""
    host.cgroup("/shared", limit=256 << 20)
    deleg = host.cgroup("/shared/deleg", limit=deleg_limit)
    job = host.cgroup("/shared/deleg/job")
    for d in (host.path("/shared"), deleg, job):
        (d / "memory.high").write_text("max\n")
    for d in (deleg, job):
        os.chown(d, NOBODY, NOBODY)
    os.setxattr(job, "user.memcgctl.oom_delay_ms", b"0")
    return host


def test_a_user_delay_never_takes_a_limited_ancestor_outside_the_delegation(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    host = delegated_v2(fake_v2, deleg_limit=None)
    p = daemon_ports(host, tmp_path)
    job = CgroupPath("/shared/deleg/job")
    assert p.managed() == {job: 0}  # honoured as a setting (nobody owns job's parent)...
    assert p.take_over(job) is None  # ...but with no limit of the delegation's own
    assert p.take_over(job) is None
    log = p.log
    assert isinstance(log, io.StringIO)
    assert log.getvalue().count("user.* delay ignored") == 1  # said once
    assert "up to /shared/deleg" in log.getvalue()
    for cg in ("/shared", "/shared/deleg", "/shared/deleg/job"):
        d = host.path(cg)
        assert owner.MARK not in os.listxattr(d)
        assert (d / "memory.high").read_text() == "max\n"


def test_a_user_delay_is_bounded_at_the_delegation_root(fake_v2: FakeHost, tmp_path: Path) -> None:
    """The delegation's own limit (root set it on nobody's delegated cgroup) is the
    domain: everything under it is the owner's."""
    host = delegated_v2(fake_v2, deleg_limit=128 << 20)
    p = daemon_ports(host, tmp_path)
    m = p.take_over(CgroupPath("/shared/deleg/job"))
    assert m is not None and (m.mode, m.domain) == (Mode.VALVE, "/shared/deleg")
    assert owner.MARK not in os.listxattr(host.path("/shared"))
    p.release(CgroupPath("/shared/deleg/job"))


def test_a_trusted_delay_still_takes_the_nearest_limited_ancestor(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    host = delegated_v2(fake_v2, deleg_limit=None)
    os.setxattr(host.path("/shared/deleg/job"), "trusted.memcgctl.oom_delay_ms", b"0")
    p = daemon_ports(host, tmp_path)
    m = p.take_over(CgroupPath("/shared/deleg/job"))
    assert m is not None and m.domain == "/shared"  # root's own setting: root's choice
    p.release(CgroupPath("/shared/deleg/job"))


def test_no_victim_thaws_a_frozen_domain(fake_v1: FakeHost) -> None:
    """v2: a domain frozen because growth outran the valve is thawed once it is clear
    that nothing may be killed (the freeze only bridges the time until a victim dies)."""
    host = never_host(fake_v1)
    ports = FakePorts(host, {"/jobs": 0}, mode=Mode.VALVE)
    core = DaemonCore(ports, select, Settings(grace=0.5, max_rounds=1))
    core.rescan(0.0)
    ports.oom.add("/jobs")
    ports.state["/jobs"] = CRITICAL
    core.notify(CgroupPath("/jobs"), 0.0)
    assert ports.frozen == [("/jobs", True)]
    for i in range(30):
        core.tick(i * 0.1)
    assert ports.killed == [] and ports.killed_all == []
    assert ports.frozen == [("/jobs", True), ("/jobs", False)]  # thawed, not refrozen
    assert ports.kinds().count("valve_thawed") == 1


def test_an_oom_group_kill_spares_its_never_processes(fake_v2: FakeHost) -> None:
    fake_v2.cgroup("/jobs", limit=256 << 20, delay_ms=0)
    fake_v2.cgroup("/jobs/grp", badness=100, oom_group=True)
    fake_v2.cgroup("/jobs/grp/keep", badness=1000)
    fake_v2.cgroup("/jobs/other", badness=900)
    fake_v2.process(10, "/jobs/grp", rss_anon_kb=10_000)
    fake_v2.process(11, "/jobs/grp", rss_anon_kb=1_000)
    fake_v2.process(12, "/jobs/grp/keep", rss_anon_kb=50_000)
    fake_v2.process(20, "/jobs/other", rss_anon_kb=90_000)
    ports = FakePorts(fake_v2, {"/jobs": 0}, mode=Mode.VALVE)
    core = DaemonCore(ports, select)
    core.rescan(0.0)
    ports.oom.add("/jobs")
    core.notify(CgroupPath("/jobs"), 0.0)
    core.tick(0.0)
    assert sorted(ports.killed) == [10, 11] and ports.killed_all == []
    kill = next(e for e in ports.events if e["kind"] == "daemon_kill")
    assert sorted(kill["killed"]) == [10, 11] and kill["kill_group"] == "/jobs/grp"
