"""The Kubernetes node, built faithfully in the cgroup v2 guest: kubelet-shaped trees
(both drivers) with real processes in the pods' container cgroups, the pod list served
by a fake kubelet on 127.0.0.1, ``memcgctl kube --once``, then ``memcgctl daemon
--root / --host-delay 0`` and a node-wide OOM: the lowest-priority pod's process dies,
not the biggest one.  Host-wide OOMs run only here, in the throw-away guest."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from memcgctl.logic.kube import pod_settings
from tests.kubeserver import fake_kubelet
from tests.kubetree import build, container_dir, load, pods_of
from tests.realkernel import TestCgroups
from tests.test_daemon_kernel import Daemon, daemons
from tests.v2.test_daemon_v2 import field, grow, vmstat_oom_kills

__all__ = ["daemons"]
TOKEN = "guest-token"
LOWEST = "ci/ci-runner-6f8b9c7d4-qw8rt"  # BestEffort, priority 0
MIDDLE = "batch/etl-28391040-k7p2m"  # Burstable, priority -10
BIGGEST = "shop/api-7c9f8d6b5-x2kqz"  # Guaranteed, priority 100000: grows until the OOM


def loopback_up() -> None:
    """The guest boots with lo down (127.0.0.1 binds, but connecting gives ENETUNREACH):
    set it up, in the guest's own network namespace (SIOCSIFFLAGS, no tools needed)."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16sh", b"lo", 0)
        flags = struct.unpack("16sh", fcntl.ioctl(s, siocgifflags, ifr))[1]
        if not flags & iff_up:
            fcntl.ioctl(s, siocsifflags, struct.pack("16sh", b"lo", flags | iff_up))


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_node_oom_kills_the_lowest_priority_pod(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon], driver: str
) -> None:
    assert os.environ.get("MEMCGCTL_IN_VM"), "host-wide OOMs only inside the guest"
    loopback_up()
    TestCgroups.write(cgroups.path(cgroups.parent), "memory.max", "max")
    # the test parent stands for the node's kubepods' parent: below pytest's own 500
    os.setxattr(cgroups.path(cgroups.parent), "trusted.memcgctl.badness", b"100")
    doc = load("kubelet-node-constructed.json")
    pods = pods_of(doc)
    where = build(pods, driver, lambda rel: cgroups.make(rel, limit=None))

    def container(label: str) -> str:
        return f"{cgroups.parent}/{container_dir(driver, where[label])}"

    small = cgroups.hog(container(LOWEST), mib=40)
    middle = cgroups.hog(container(MIDDLE), mib=60)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    with fake_kubelet([doc], TOKEN) as k:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "memcgctl",
                "--cgroup-root",
                str(cgroups.path(cgroups.parent)),
                "kube",
                "--once",
                "--kubelet-url",
                k.url + "/pods",
                "--token-file",
                str(token),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert r.returncode == 0, r.stderr
    by_label = {p.label: p for p in pods}
    for label, rel in where.items():
        pod_cg = cgroups.path(f"{cgroups.parent}/{rel}")
        got = int(os.getxattr(pod_cg, "trusted.memcgctl.badness"))
        assert got == pod_settings(by_label[label]).badness, label
        assert os.getxattr(pod_cg, "trusted.memcgctl.pod") == label.encode()
    # the prediction names the pod of the victim's (container) cgroup
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "memcgctl",
            "--cgroup-root",
            str(cgroups.path(cgroups.parent)),
            "predict-victim",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    victim = json.loads(r.stdout)["victim"]
    assert victim["pid"] == small.pid and victim["pod"] == LOWEST, victim
    before = vmstat_oom_kills()
    d = Daemon(tmp_path, "/", "--host-delay", "0")
    daemons.append(d)
    d.wait_for("daemon_took_over", "/", timeout=60)
    g = grow(cgroups, container(BIGGEST), 0.0, upto_mib=4096, chunk_kib=4096)
    _, line = d.wait_for("daemon_kill", "/", timeout=120)
    g.kill()
    assert field(line, "pid") == str(small.pid), line
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.wait(timeout=30)
    assert middle.poll() is None
    assert vmstat_oom_kills() == before, "the kernel's OOM killer acted"
    assert d.stop() == 0
