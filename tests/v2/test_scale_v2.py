"""Issue 22 in the guest: the daemon on cgroup v2 inside a Kubernetes node's scale — a
kubelet-shaped tree of 2,000 memcgs (tests/nodetree.py: pods with 4 containers and
their pause/app scopes, ``memory.max`` on every pod, system services) with 400 sleeping
processes in its leaves.  One pod is a managed memcg with delay 0; a real OOM there: the
policy's victim dies, not the biggest process the kernel would pick, the kernel's OOM
killer kills nobody, the tree is watched (no walk per rescan), and nothing else is
touched — every other cgroup's limits and xattrs, inside and outside the test parent,
are as they were, and every sleeper lives.  The time in the emulated guest (2026-12-07):
42 s, and 12 s to remove the tree (2,500 memcgs and 500 sleepers: 50 s + 14 s)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.nodetree import build_system, build_tree, node_shape, start_sleepers
from tests.realkernel import TestCgroups, subdirs, wait_until
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.v2.test_daemon_v2 import MIB, field, grow, no_kernel_kill

__all__ = ["daemons"]
CGROUPS = 2000
SLEEPERS = 400
POD_LIMIT = 160 * MIB  # valve 144 MiB: holder + victim + grower (3 interpreters) exceed it,
# holder + grower alone do not

Knobs = dict[str, tuple[str, str, tuple[tuple[str, bytes], ...]]]


def knobs(mount: Path, skip: Path) -> Knobs:
    """memory.high, memory.max and the xattrs of every cgroup on the hierarchy but those
    at or below ``skip``."""

    def read(d: Path, name: str) -> str:
        f = d / name
        return f.read_text().strip() if f.exists() else "-"

    out: Knobs = {}
    for d in [mount, *subdirs(mount)]:
        if d == skip or skip in d.parents:
            continue
        xattrs = tuple(sorted((n, os.getxattr(d, n)) for n in os.listxattr(d)))
        out[str(d)] = (read(d, "memory.high"), read(d, "memory.max"), xattrs)
    return out


def test_a_pod_among_thousands_of_memcgs_loses_only_the_policys_victim(
    cgroups: TestCgroups, v2_mount: Path, tmp_path: Path, daemons: list[Daemon]
) -> None:
    pods_n, services_n = node_shape(CGROUPS)
    leaves, pods = build_tree(cgroups, pods_n)
    services = build_system(cgroups, services_n)
    pod = pods[len(pods) // 2]
    cgroups.set_limit(pod, POD_LIMIT)
    outside = [leaf for leaf in leaves if not leaf.startswith(pod + "/")] + services
    home = cgroups.make("sleepers", limit=None)
    assert start_sleepers(cgroups, outside, SLEEPERS, tmp_path, home=home) == SLEEPERS
    made = len(subdirs(cgroups.path(cgroups.parent)))
    assert made >= CGROUPS, made
    sleepers = {pid for cg in outside for pid in cgroups.pids(cg)}

    low, big = f"{pod}/c1", f"{pod}/c0"
    set_xattr(cgroups, low, "badness", "100")
    set_xattr(cgroups, big, "badness", "900")
    victim = cgroups.hog(f"{low}/app", mib=30)  # the policy's victim
    holder = cgroups.hog(f"{big}/app", mib=40)  # the kernel would pick a bigger one
    set_xattr(cgroups, pod, "oom_delay_ms", "0")
    before = knobs(v2_mount, cgroups.path(pod))

    d = Daemon(tmp_path / "state", cgroups.parent)
    daemons.append(d)
    _, line = d.wait_for("daemon_took_over", pod, timeout=180)
    assert field(line, "mode") == "valve"
    g = grow(cgroups, f"{big}/app", 0.005, upto_mib=60)
    d.wait_for("under_oom", pod, timeout=120)
    _, line = d.wait_for("daemon_kill", pod, timeout=120)
    assert field(line, "pid") == str(victim.pid), line
    assert victim.wait(timeout=30) == -signal.SIGKILL
    assert g.stdout is not None and g.stdout.readline() == b"survived\n"  # it got its 60 MiB
    assert holder.poll() is None
    no_kernel_kill(cgroups, pod)
    wait_until(lambda: "oom_resolved" in d.kinds(), "the OOM resolved", timeout=60)
    assert d.kinds().count("daemon_kill") == 1
    assert "tree_watch_off" not in d.kinds()  # 2,000 directories: watched, not walked
    assert d.stop() == 0

    assert knobs(v2_mount, cgroups.path(pod)) == before
    assert {pid for cg in outside for pid in cgroups.pids(cg)} == sleepers
