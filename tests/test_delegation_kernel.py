"""SPEC §2.3 against the real v1 kernel, the attacker being ``nobody`` in a delegated
subtree (issue 21 item 3): ``user.*`` badness 1000 on every cgroup of its subtree does
not make the subtree unkillable; the daemon's victim dies inside it, not in root's
sibling at trusted 900, and the kernel kills nobody."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.realkernel import HELPERS, TestCgroups, journaled, readable_helpers
from tests.test_daemon_kernel import Daemon, daemons, oom_control, run_cli, set_xattr

__all__ = ["daemons"]
pytestmark = pytest.mark.kernel

NOBODY = 65534
SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody
needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs setpriv and /usr/bin/python3 to act as nobody",
)

# nobody's part: make its cgroups and rank every one of them "never" through user.*
_RANK_AS_NOBODY = (
    "import os, sys\n"
    "for d in sys.argv[1:]:\n"
    "    os.mkdir(d)\n"
    "    os.setxattr(d, 'user.memcgctl.badness', b'1000')\n"
)


def grower_in(tc: TestCgroups, cg: str) -> subprocess.Popen[bytes]:
    return tc.spawn(cg, [sys.executable, str(HELPERS / "grow.py"), "4096", "512"])


def delegate(tc: TestCgroups, cg: str, uid: int = NOBODY) -> Path:
    """Hand ``cg`` to ``uid`` the way a delegation does: the directory and the files
    that move processes and enable controllers (v1: cgroup.procs and tasks)."""
    d = tc.path(cg)
    for f in [
        d,
        *(d / n for n in ("cgroup.procs", "tasks", "cgroup.subtree_control", "cgroup.threads")),
    ]:
        if f.exists():
            os.chown(f, uid, uid)
    return d


def as_nobody_in(tc: TestCgroups, cg: str, argv: list[str]) -> subprocess.Popen[bytes]:
    """Start argv as nobody; it joins cg itself (nobody's own cgroup) before it execs."""
    procs = tc.path(cg) / "cgroup.procs"
    p = subprocess.Popen(
        [*SETPRIV, "/bin/sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *argv],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    tc.procs.append(p)
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    return p


@needs_setpriv
def test_user_never_inside_a_subtree_does_not_shift_the_oom_to_a_sibling(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = cgroups.make("jobs", limit=96 << 20)
    deleg = cgroups.make("jobs/deleg", limit=None)
    other = cgroups.make("jobs/other", limit=None)
    set_xattr(cgroups, deleg, "badness", "100")  # root ranks nobody's subtree first
    set_xattr(cgroups, other, "badness", "900")
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    d = delegate(cgroups, deleg)
    r = subprocess.run(
        [*SETPRIV, SYSTEM_PYTHON, "-c", _RANK_AS_NOBODY, str(d / "a"), str(d / "b")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    cgroups.dirs += [d / "a", d / "b"]
    a, b = f"{deleg}/a", f"{deleg}/b"
    for cg in (a, b):
        assert os.stat(cgroups.path(cg)).st_uid == NOBODY
        assert os.getxattr(cgroups.path(cg), "user.memcgctl.badness") == b"1000"
    held = as_nobody_in(cgroups, a, [SYSTEM_PYTHON, str(readable_helpers() / "hog.py"), "4"])
    big = cgroups.hog(other, mib=40)  # root's, the biggest: the kernel's pick
    dm = Daemon(tmp_path, cgroups.parent)
    daemons.append(dm)
    dm.wait_for("daemon_took_over", top)
    g = as_nobody_in(
        cgroups, b, [SYSTEM_PYTHON, str(readable_helpers() / "grow.py"), "4096", "512"]
    )
    assert g.wait(timeout=30) == -signal.SIGKILL  # inside the subtree: b, larger than a
    _, line = dm.wait_for("daemon_kill", top)
    assert f"pid={g.pid} " in line and f"victim_cgroup={b}" in line, line
    assert big.poll() is None and held.poll() is None  # root's sibling is untouched
    for cg in (top, deleg, other, a, b):
        assert oom_control(cgroups, cg)["oom_kill"] == 0  # the kernel killed nobody
    assert journaled(tmp_path, "user_kill", g.pid)["by"] == "daemon"
    assert dm.stop() == 0


def test_no_victim_kills_nothing_whose_badness_is_1000(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Every process of the OOMing memcg is "never" (in a trusted-1000 cgroup, or with
    process badness 1000): the daemon says so once and kills nothing, escalation
    included; the memcg stays held for userspace (the kernel's own OOM killer, finding
    no victim, would not kill either)."""
    top = cgroups.make("jobs", limit=64 << 20)
    keep = cgroups.make("jobs/keep", limit=None)
    adj = cgroups.make("jobs/proc", limit=None)
    set_xattr(cgroups, keep, "badness", "1000")
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    shielded = cgroups.hog(adj, mib=4)
    r = run_cli(tmp_path, "set-badness", "--pid", str(shielded.pid), "1000")
    assert r.returncode == 0, r.stderr
    dm = Daemon(tmp_path, cgroups.parent, "--max-rounds", "1", "--grace", "200ms")
    daemons.append(dm)
    dm.wait_for("daemon_took_over", top)
    g = grower_in(cgroups, keep)
    _, line = dm.wait_for("daemon_escalated", top)
    assert ' killed="" ' in line, line
    lo, hi = sorted((g.pid, shielded.pid))
    assert f' spared="{lo} / {hi}"' in line, line
    dm.wait_for("no_victim", top)
    time.sleep(2.0)  # ten grace periods: still nothing killed, nothing said again
    assert g.poll() is None and shielded.poll() is None
    assert dm.kinds().count("no_victim") == 1 and dm.kinds().count("daemon_escalated") == 1
    assert "daemon_kill" not in dm.kinds()
    assert oom_control(cgroups, top)["under_oom"] == 1
    assert all(oom_control(cgroups, cg)["oom_kill"] == 0 for cg in (top, keep, adj))
    g.kill()  # the test ends the episode itself (our own pid)
    assert g.wait(timeout=15) == -signal.SIGKILL
    assert dm.stop() == 0
