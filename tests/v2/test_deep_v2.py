"""Issue 21 item 1 on cgroup v2 (in the guest): ``nobody`` nests 1,100 cgroups and a
path longer than PATH_MAX in its delegated subtree; the commands answer without a
traceback and a running daemon survives, then still kills the policy's victim at the
valve of a managed memcg."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

from tests.realkernel import TestCgroups
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.test_deep_kernel import BUILD, DEPTH, LONG, memcgctl
from tests.test_hostile import SETPRIV, SYSTEM_PYTHON
from tests.v2.test_daemon_v2 import field, grow, jobs, no_kernel_kill

__all__ = ["daemons", "jobs"]  # fixtures, used by name


def nobody_chain(tc: TestCgroups, deleg: str, name: str, depth: int) -> subprocess.Popen[bytes]:
    """Started by root in ``deleg`` (v2: moving a process needs write access to the
    common ancestor's cgroup.procs, here nobody's own), nobody then builds the chain and
    moves itself to its bottom."""
    procs = tc.path(deleg) / "cgroup.procs"
    p = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            f'echo $$ > "{procs}" && exec "$@"',
            "sh",
            *SETPRIV,
            SYSTEM_PYTHON,
            "-c",
            BUILD,
            name,
            str(depth),
            "-",
        ],
        cwd=tc.path(deleg),
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    tc.procs.append(p)
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    return p


def delegate_v2(tc: TestCgroups) -> str:
    deleg = tc.make("deleg", limit=64 << 20)
    d = tc.path(deleg)
    for f in (d, d / "cgroup.procs", d / "cgroup.subtree_control", d / "cgroup.threads"):
        os.chown(f, 65534, 65534)
    return deleg


def test_deep_and_long_trees_on_v2(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = jobs["top"]
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    deleg = delegate_v2(cgroups)
    deep = nobody_chain(cgroups, deleg, "d", DEPTH)
    long = nobody_chain(cgroups, deleg, LONG, 20)
    deep_cg, long_cg = deleg + "/d" * DEPTH, deleg + f"/{LONG}" * 20

    def ok(*args: str) -> str:
        r = memcgctl(tmp_path / "cli", *args)
        assert "Traceback" not in r.stderr, r.stderr[-2000:]
        assert r.returncode == 0, (args, r.stderr[-500:])
        return r.stdout

    paths = {c["cgroup"] for c in json.loads(ok("tree", "--json", cgroups.parent))["cgroups"]}
    assert deep_cg in paths and long_cg in paths
    procs = {p["pid"]: p["cgroup"] for p in json.loads(ok("ps", "--json", deleg))["processes"]}
    assert procs[deep.pid] == deep_cg and procs[long.pid] == long_cg
    pv = json.loads(ok("predict-victim", "--json", deleg))
    assert pv["victim"]["pid"] in (deep.pid, long.pid)
    counted = {c["cgroup"] for c in json.loads(ok("counters", "--json"))["cgroups"]}
    assert deep_cg in counted and long_cg in counted
    assert "off" in ok("get-delay", deep_cg)
    # the daemon walked these trees at every rescan meanwhile, and is still there
    assert d.proc.poll() is None
    small = cgroups.hog(jobs["low"], mib=40)  # the policy's victim
    big = cgroups.hog(jobs["high"], mib=120)  # the kernel's: the biggest
    g = grow(cgroups, jobs["high"], 0.005)
    _, line = d.wait_for("daemon_kill", top, timeout=90)
    # stop the growth at once: left growing while small dies, it fills the room small
    # gave back and a second, legitimate episode follows (seen under a loaded host)
    g.kill()
    g.wait(timeout=30)
    assert field(line, "pid") == str(small.pid), line
    assert small.wait(timeout=30) == -signal.SIGKILL
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    ok("kill-all", deleg)  # cgroup.kill through the deep and long subtree
    assert deep.wait(timeout=30) == -signal.SIGKILL and long.wait(timeout=30) == -signal.SIGKILL
    assert not any("Traceback" in t or "daemon_error" in t for _, t in d.lines)
    assert d.stop() == 0
