"""Issue 22: the daemon's brief priority walk on the real v1 kernel, over a node-like
tree (pods with containers): the same victim as the full walk, reading the pods'
badness and only the cgroups it compares; nothing kept between two decisions, so a
badness written or a cgroup removed in between is seen; a cgroup that vanishes
between the walk ranking it and reading it is passed over.  And the daemon, deciding
with it, kills the priority victim at the pods' root before the kernel kills anyone."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from memcgctl.env import Env
from memcgctl.logic.priority import select_priority, select_priority_brief
from memcgctl.snapshot import LazyCgroups, take_snapshot
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.model import Snapshot
from memcgctl.vocab.reasons import LevelChoice
from tests.realkernel import HELPERS, TestCgroups, wait_until
from tests.test_daemon_kernel import Daemon, oom_control

pytestmark = pytest.mark.kernel

PODS = 240  # x (1 pod + 4 containers + 4 scopes): 2,160 cgroups below the pods' root


def node_tree(tc: TestCgroups) -> tuple[str, list[str]]:
    """``kubepods/{guaranteed,burstable,besteffort}/podN/cK/app``; returns the pods'
    root and the pods (a memory limit on each)."""
    qos = ("guaranteed", "burstable", "besteffort")
    kube = tc.make("kubepods", limit=None)
    for q in qos:
        tc.make(f"kubepods/{q}", limit=None)
    pods = []
    for i in range(PODS):
        pod = tc.make(f"kubepods/{qos[i % 3]}/pod{i:04}", limit=64 << 20)
        pods.append(pod)
        for c in range(4):
            tc.make(f"kubepods/{qos[i % 3]}/pod{i:04}/c{c}/app", limit=None)
    return kube, pods


def badness(tc: TestCgroups, cg: str, value: int) -> None:
    os.setxattr(tc.path(cg), "trusted.memcgctl.badness", str(value).encode())


def lazy(env: Env, root: CgroupPath) -> Snapshot:
    return take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)


def test_the_brief_walk_over_a_real_node_tree(cgroups: TestCgroups, tmp_path: Path) -> None:
    kube, pods = node_tree(cgroups)
    # a few sleepers in the scopes of a few pods; a low-badness pod with one more
    for pod in pods[::40]:
        cgroups.sleeper(f"{pod}/c1/app")
    low, other = pods[8], pods[101]  # two besteffort pods
    badness(cgroups, f"{kube}/besteffort", 100)  # the QoS class that goes first
    badness(cgroups, low, 10)
    low_sleeper = cgroups.sleeper(f"{low}/c3/app")
    other_sleeper = cgroups.sleeper(f"{other}/c0/app")
    env = Env(cgroup_root=cgroups.mount, state_dir=tmp_path / "state")
    root = CgroupPath(kube)

    snap = lazy(env, root)
    brief = select_priority_brief(snap, root)
    full = select_priority(take_snapshot(env.fs, env.proc, env.registry, root), root)
    assert brief.victim is not None and brief.victim.pid == low_sleeper.pid
    assert full.victim is not None and brief.victim.pid == full.victim.pid
    assert isinstance(snap.cgroups, LazyCgroups)
    # the root, besteffort, the low pod and its containers, the way down to its process
    assert snap.cgroups.read_count <= 10 < 2000
    top, qos = brief.reasons[:2]  # 3 QoS classes, then 80 pods: one looked into each
    assert isinstance(top, LevelChoice) and (top.candidates, top.unchecked) == (3, 2)
    assert isinstance(qos, LevelChoice) and (qos.candidates, qos.unchecked) == (80, 79)

    # nothing is kept between two decisions: a badness written now counts at once
    badness(cgroups, other, 5)
    again = select_priority_brief(lazy(env, root), root)
    assert again.victim is not None and again.victim.pid == other_sleeper.pid

    # listed and ranked by its badness, then gone before the walk reads it: passed over
    snap = lazy(env, root)
    assert CgroupPath(other) in snap.cgroups[CgroupPath(f"{kube}/besteffort")].children
    assert snap.badness_of(CgroupPath(other)) == (5, "trusted")
    other_sleeper.kill()
    other_sleeper.wait()
    for d in sorted(cgroups.path(other).rglob("*"), reverse=True):
        if d.is_dir():
            d.rmdir()
    cgroups.path(other).rmdir()
    after = select_priority_brief(snap, root)
    assert after.victim is not None and after.victim.pid == low_sleeper.pid
    fresh = select_priority(take_snapshot(env.fs, env.proc, env.registry, root), root)
    assert fresh.victim is not None and after.victim.pid == fresh.victim.pid


def test_the_daemon_kills_the_priority_victim_at_a_pods_root(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    """The pods' root is the OOM domain (delay 0): the daemon's brief walk picks the
    badness-0 grower among 240 pods, not the big badness-900 holder the kernel would
    pick; the kernel kills nobody; the kill's reasons say what it did not look into."""
    kube, pods = node_tree(cgroups)
    cgroups.set_limit(kube, 128 << 20)
    os.setxattr(cgroups.path(kube), "trusted.memcgctl.oom_delay_ms", b"0")
    for pod in pods[::60]:
        cgroups.sleeper(f"{pod}/c0/app")
    badness(cgroups, f"{kube}/besteffort", 100)
    badness(cgroups, pods[1], 900)
    big = cgroups.hog(f"{pods[1]}/c0/app", mib=40)
    victim_cg = cgroups.make("kubepods/besteffort/victim", limit=None)
    badness(cgroups, victim_cg, 0)
    d = Daemon(tmp_path, cgroups.parent)
    try:
        d.wait_for("daemon_took_over", kube, timeout=60)
        g = cgroups.spawn(victim_cg, [sys.executable, str(HELPERS / "grow.py"), "4096", "512"])
        assert g.wait(timeout=30) == -signal.SIGKILL
        _, line = d.wait_for("daemon_kill", kube)
        assert f"pid={g.pid}" in line and "not looked into" in line
        assert big.poll() is None
        wait_until(lambda: oom_control(cgroups, kube)["under_oom"] == 0 or None, "OOM over")
        assert oom_control(cgroups, kube)["oom_kill"] == 0
    finally:
        d.stop()
