"""Issue 21 item 1 on the real kernel: what the ``nobody`` user can nest in its delegated
subtree — a chain 1,100 cgroups deep, and one whose path is longer than PATH_MAX — breaks
no command and no daemon.  The attacker runs as ``nobody`` (setpriv) and builds the
trees itself; every command runs over them and must answer correctly, without a
traceback; a daemon running meanwhile must survive and still kill the policy's victim in
a managed memcg (a real OOM) afterwards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realkernel import TestCgroups
from tests.test_daemon_kernel import Daemon, grower, jobs, oom_control, wait_dead
from tests.test_hostile import SETPRIV, SYSTEM_PYTHON, needs_root, needs_setpriv

pytestmark = [pytest.mark.kernel, needs_root, needs_setpriv]
__all__ = ["jobs"]  # a fixture, used by name

REPO = Path(__file__).resolve().parent.parent
DEPTH = 1100  # past Python's recursion limit (1000)
LONG = "L" * 250  # 20 of these: a path of ~5,000 bytes, past PATH_MAX (4096)

# Run as nobody: descend from the delegated cgroup (relative chdir: no PATH_MAX), make
# the chain, optionally set a user.* delay on its last cgroup, join it, then sleep.
BUILD = """
import os, sys, time
name, depth, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for _ in range(depth):
    os.mkdir(name)
    os.chdir(name)
if delay != "-":
    os.setxattr(".", "user.memcgctl.oom_delay_ms", delay.encode())
fd = os.open("cgroup.procs", os.O_WRONLY)
os.write(fd, str(os.getpid()).encode())
os.close(fd)
print("ready", flush=True)
time.sleep(3600)
"""


def as_nobody_build(
    tc: TestCgroups, start: str, name: str, depth: int, delay: str = "-"
) -> subprocess.Popen[bytes]:
    """nobody builds a chain below ``start`` and waits at its bottom (started by us,
    killed by the fixture's cleanup)."""
    p = subprocess.Popen(
        [*SETPRIV, SYSTEM_PYTHON, "-c", BUILD, name, str(depth), delay],
        cwd=tc.path(start),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    tc.procs.append(p)
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    return p


def delegate(tc: TestCgroups, rel: str) -> str:
    """A cgroup handed to nobody (directory and the files to join it), with a limit."""
    cg = tc.make(rel, limit=64 << 20)
    d = tc.path(cg)
    for p in (d, d / "cgroup.procs", d / "tasks"):
        os.chown(p, 65534, 65534)
    return cg


def memcgctl(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memcgctl", "--state-dir", str(state), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def attacked(cgroups: TestCgroups) -> Iterator[dict[str, object]]:
    deleg = delegate(cgroups, "deleg")
    deep = as_nobody_build(cgroups, deleg, "d", DEPTH)
    long = as_nobody_build(cgroups, deleg, LONG, 20)
    yield {
        "deleg": deleg,
        "deep": deep,
        "long": long,
        "deep_cg": deleg + "/d" * DEPTH,
        "long_cg": deleg + f"/{LONG}" * 20,
    }


def test_every_command_over_a_deep_and_a_long_tree(
    cgroups: TestCgroups, attacked: dict[str, object], tmp_path: Path
) -> None:
    deep, long = attacked["deep"], attacked["long"]
    assert isinstance(deep, subprocess.Popen) and isinstance(long, subprocess.Popen)
    deep_cg, long_cg = str(attacked["deep_cg"]), str(attacked["long_cg"])
    assert len((cgroups.mount.as_posix() + long_cg).encode()) > 4096
    top = cgroups.parent

    def ok(*args: str, code: int = 0) -> str:
        r = memcgctl(tmp_path, *args)
        assert "Traceback" not in r.stderr, r.stderr[-2000:]
        assert r.returncode == code, (args, r.stderr[-500:])
        return r.stdout

    doc = json.loads(ok("tree", "--json", top))
    paths = {c["cgroup"]: c for c in doc["cgroups"]}
    assert deep_cg in paths and long_cg in paths
    assert paths[deep_cg]["nr_tasks"] == 1 and paths[long_cg]["nr_tasks"] == 1
    assert ok("tree", top).count("\n") >= DEPTH + 20
    procs = {p["pid"]: p for p in json.loads(ok("ps", "--json", top))["processes"]}
    assert procs[deep.pid]["cgroup"] == deep_cg and procs[long.pid]["cgroup"] == long_cg
    assert str(deep.pid) in ok("ps", top)
    pv = json.loads(ok("predict-victim", "--json", top))
    assert pv["victim"]["pid"] in (deep.pid, long.pid)
    assert len(pv["walk"]) >= 20
    assert str(pv["victim"]["pid"]) in ok("predict-victim", "--explain", "--plain", top)
    counted = {c["cgroup"] for c in json.loads(ok("counters", "--json"))["cgroups"]}
    assert deep_cg in counted and long_cg in counted
    assert [c["cgroup"] for c in json.loads(ok("counters", "--json", top))["cgroups"]] == [top]
    ok("counters", top + "/deleg")
    assert "off" in ok("get-delay", deep_cg)
    assert "off" in ok("get-delay", long_cg)
    assert "default" in ok("get-badness", deep_cg)
    dry = ok("kill-all", "--dry-run", top + "/deleg")
    assert str(deep.pid) in dry and str(long.pid) in dry
    # the real kill-all of the delegated subtree (our test parent, pids we started)
    ok("kill-all", top + "/deleg")
    assert wait_dead(deep) == -signal.SIGKILL and wait_dead(long) == -signal.SIGKILL


def test_a_daemon_survives_the_trees_and_still_kills_the_policys_victim(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path
) -> None:
    """The issue's daemon crashed 0.7 s after the deep tree appeared, and the next OOM
    was the kernel's (it killed the badness-900 process).  Here it walks the trees at
    every rescan, takes over nobody's deep and long memcgs (user.* delay inside
    nobody's own delegation), and then the OOM in /jobs is still the policy's."""
    os.setxattr(cgroups.path(jobs["top"]), "trusted.memcgctl.oom_delay_ms", b"0")
    d = Daemon(tmp_path, cgroups.parent)
    try:
        d.wait_for("daemon_took_over", jobs["top"])
        deleg = delegate(cgroups, "deleg")
        as_nobody_build(cgroups, deleg, "d", DEPTH, delay="0")
        as_nobody_build(cgroups, deleg, LONG, 20, delay="0")
        d.wait_for("daemon_took_over", deleg + "/d" * DEPTH, timeout=60)
        d.wait_for("daemon_took_over", deleg + f"/{LONG}" * 20, timeout=60)
        assert d.proc.poll() is None
        big = cgroups.hog(jobs["high"], mib=56)  # the kernel would kill this one
        g = grower(cgroups, jobs["low"])
        assert wait_dead(g, timeout=60) == -signal.SIGKILL
        _, line = d.wait_for("daemon_kill", jobs["top"], timeout=60)
        assert f"pid={g.pid}" in line
        assert big.poll() is None
        for cg in jobs.values():
            assert oom_control(cgroups, cg)["oom_kill"] == 0
        assert d.proc.poll() is None
        assert not any("Traceback" in text for _, text in d.lines)
        assert not any("daemon_error" in text for _, text in d.lines)
    finally:
        assert d.stop() == 0
