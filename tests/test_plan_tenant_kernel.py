"""A tenant against the daemon's standing plan, on the real v1 kernel (issue 22): nobody,
owning a delegated subtree inside a managed delay-0 memcg, makes 2,000 empty cgroups ranked
first there (``user.memcgctl.badness`` 1).  Checking a plan would take reading them all
(each could receive the winning process), so none is kept (``STAMP_MAX_CGROUPS``): at the
OOM the policy's victim is chosen afresh and dies, the kernel kills nobody, nothing outside
the tenant's subtree changes, and the daemon's loop stays alive throughout."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memcgctl.daemon.guardian import heartbeat_path
from memcgctl.daemon.ports import STAMP_MAX_CGROUPS
from memcgctl.daemon.watchdog import RELEASED_BY_GUARDIAN
from tests.realkernel import HELPERS, TestCgroups, journaled, readable_helpers, subdirs
from tests.test_daemon_kernel import Daemon, daemons, oom_control, set_xattr
from tests.test_delegation_kernel import (
    NOBODY,
    SETPRIV,
    SYSTEM_PYTHON,
    as_nobody_in,
    delegate,
    needs_setpriv,
)

__all__ = ["daemons"]
pytestmark = [pytest.mark.kernel, needs_setpriv]

EMPTIES = 2000  # the tenant's empty cgroups, ranked before its own work
LIMIT = 128 << 20


def tenant_script(*, enable_memory: bool = False) -> str:
    """nobody's part: (v2: the memory controller for its children,) its work cgroup,
    then EMPTIES empty ones ranked first, all through user.*"""
    enable = (
        "with open(os.path.join(deleg, 'cgroup.subtree_control'), 'w') as f:\n"
        "    f.write('+memory')\n"
    )
    return (
        "import os, sys\n"
        "deleg, n = sys.argv[1], int(sys.argv[2])\n"
        + (enable if enable_memory else "")
        + "work = os.path.join(deleg, 'work')\n"
        "os.mkdir(work)\n"
        "os.setxattr(work, 'user.memcgctl.badness', b'500')\n"
        "for i in range(n):\n"
        "    d = os.path.join(deleg, 'e%05d' % i)\n"
        "    os.mkdir(d)\n"
        "    os.setxattr(d, 'user.memcgctl.badness', b'1')\n"
    )


def xattrs(path: Path) -> dict[str, bytes]:
    return {n: os.getxattr(path, n) for n in os.listxattr(path)}


def contained_and_alive(
    cgroups: TestCgroups,
    deleg: Path,
    dm: Daemon,
    state: Path,
    killed_at: float,
    roots: list[Path],
    before: dict[Path, dict[str, bytes]],
) -> None:
    """After the tenant's OOM: what nobody owns is inside its own subtree; the loop did
    not stall (its heartbeat went on after the kill, the guardian never took over, it
    stops cleanly when asked); and nothing outside the tenant's subtree changed (the
    daemon's own marks on root's cgroups are gone with it)."""
    owned = [p for p in subdirs(cgroups.path(cgroups.parent)) if os.stat(p).st_uid == NOBODY]
    assert all(p == deleg or deleg in p.parents for p in owned) and len(owned) == EMPTIES + 2
    beat = Path(heartbeat_path(str(state), dm.proc.pid))
    deadline = time.monotonic() + 10
    while os.stat(beat).st_mtime < killed_at and time.monotonic() < deadline:
        time.sleep(0.1)
    assert os.stat(beat).st_mtime >= killed_at
    assert not any(RELEASED_BY_GUARDIAN in t or "guardian:" in t for _, t in dm.lines)
    assert dm.stop() == 0
    assert {p: xattrs(p) for p in roots} == before


def test_a_tenants_thousands_of_empty_cgroups_keep_no_plan_and_the_oom_is_still_ours(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    assert EMPTIES > STAMP_MAX_CGROUPS
    top = cgroups.make("jobs", limit=LIMIT)  # set before anything allocates there
    deleg = cgroups.make("jobs/deleg", limit=None)
    other = cgroups.make("jobs/other", limit=None)
    set_xattr(cgroups, deleg, "badness", "100")  # root ranks the tenant first
    set_xattr(cgroups, other, "badness", "900")
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    d = delegate(cgroups, deleg)
    r = subprocess.run(
        [*SETPRIV, SYSTEM_PYTHON, "-c", tenant_script(), str(d), str(EMPTIES)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    made = subdirs(d)
    assert len(made) == EMPTIES + 1 and all(os.stat(p).st_uid == NOBODY for p in made)
    roots = [cgroups.path(cg) for cg in (top, other)]
    before = {p: xattrs(p) for p in roots}
    work = f"{deleg}/work"
    victim = as_nobody_in(cgroups, work, [SYSTEM_PYTHON, str(readable_helpers() / "hog.py"), "40"])
    # the kernel charges each new memcg's own memory to its parent (~12 KiB here): the
    # grower's target is what fills the rest of the limit, and 10 MiB more
    used = int((cgroups.path(top) / "memory.usage_in_bytes").read_text())
    upto = (LIMIT - used >> 20) + 10
    dm = Daemon(tmp_path, cgroups.parent)  # with its guardian, which would see a hang
    daemons.append(dm)
    dm.wait_for("daemon_took_over", top, timeout=60)
    # 1 MiB every 40 ms: the memcg spends ~0.5 s within an eighth of its limit, where a
    # plan would be chosen ahead (tests/test_daemon_plan_kernel.py), then runs out
    grower = cgroups.spawn(
        other, [sys.executable, str(HELPERS / "grow.py"), "1024", str(upto), "0.04"]
    )
    assert victim.wait(timeout=60) == -signal.SIGKILL  # the policy's: the tenant's work
    killed_at = time.time()
    _, kill = dm.wait_for("daemon_kill", top)
    assert f"pid={victim.pid} " in kill and f"victim_cgroup={work}" in kill, kill
    assert " plan_age_ms=" not in kill, kill  # chosen afresh: no plan was kept
    assert grower.stdout is not None
    assert grower.stdout.readline() == b"survived\n", "\n".join(t for _, t in dm.lines)
    for cg in (top, deleg, other, work):
        assert oom_control(cgroups, cg)["oom_kill"] == 0  # the kernel killed nobody
    dm.wait_for("oom_resolved", top)
    assert journaled(tmp_path, "user_kill", victim.pid)["by"] == "daemon"
    contained_and_alive(cgroups, d, dm, tmp_path, killed_at, roots, before)
