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


def tenant_domain(
    cgroups: TestCgroups, limit: int, *, enable_memory: bool = False
) -> tuple[str, str, str]:
    """A delay-0 domain ``jobs`` (``limit``) whose first-ranked child ``deleg`` (badness
    100) is nobody's, who made its work cgroup and EMPTIES empty ones there; root's
    ``other`` (900) beside it: (jobs, deleg, other)."""
    top = cgroups.make("jobs", limit=limit)  # set before anything allocates there
    deleg = cgroups.make("jobs/deleg", limit=None)
    other = cgroups.make("jobs/other", limit=None)
    set_xattr(cgroups, deleg, "badness", "100")  # root ranks the tenant first
    set_xattr(cgroups, other, "badness", "900")
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    d = delegate(cgroups, deleg)
    script = tenant_script(enable_memory=enable_memory)
    r = subprocess.run(
        [*SETPRIV, SYSTEM_PYTHON, "-c", script, str(d), str(EMPTIES)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    made = subdirs(d)
    assert len(made) == EMPTIES + 1 and all(os.stat(p).st_uid == NOBODY for p in made)
    return top, deleg, other


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
    top, deleg, other = tenant_domain(cgroups, LIMIT)
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
    contained_and_alive(cgroups, cgroups.path(deleg), dm, tmp_path, killed_at, roots, before)


def refused_for(dm: Daemon, cg: str) -> list[str]:
    """The daemon's ``plan_refused`` debug lines for managed memcg ``cg``: each refresh
    that chose a victim over its domain and kept no plan (daemon/choosing.py)."""
    return [t for _, t in refused_at(dm, cg)]


def refused_at(dm: Daemon, cg: str) -> list[tuple[float, str]]:
    """:func:`refused_for` with the monotonic time each line arrived."""
    return [
        (at, t) for at, t in dm.lines if t.startswith("<7>plan_refused ") and f" cgroup={cg} " in t
    ]


def test_a_tenants_empty_cgroups_do_not_hold_another_memcgs_oom_back(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """nobody's 2,000 empty cgroups ranked first in a delay-0 domain that stays near its
    line for seconds: its plan is refused once, then not chosen again while its tree is
    unchanged (before, a choice over the tenant's tree held the single loop once a
    second).  Meanwhile root's own managed memcg outside that subtree runs out: its
    policy victim dies and the kernel kills nothing there.  Then the tenant's domain
    runs out too: its victim is chosen at the event (past the empty cgroups by their
    emptiness probe) and dies."""
    solo = cgroups.make("solo", limit=64 << 20)  # root's, outside nobody's subtree
    low = cgroups.make("solo/low", limit=None)
    high = cgroups.make("solo/high", limit=None)
    set_xattr(cgroups, low, "badness", "10")
    set_xattr(cgroups, high, "badness", "900")
    set_xattr(cgroups, solo, "oom_delay_ms", "0")
    top, deleg, other = tenant_domain(cgroups, LIMIT)
    roots = [cgroups.path(cg) for cg in (top, other, solo, low, high)]
    before = {p: xattrs(p) for p in roots}
    work = f"{deleg}/work"
    victim = as_nobody_in(cgroups, work, [SYSTEM_PYTHON, str(readable_helpers() / "hog.py"), "40"])
    solo_victim = cgroups.hog(low, mib=8)  # the policy's in solo; the kernel's: the grower
    dm = Daemon(tmp_path, cgroups.parent)  # its debug lines on stderr too
    daemons.append(dm)
    dm.wait_for("daemon_took_over", top, timeout=60)
    dm.wait_for("daemon_took_over", solo, timeout=60)
    # jobs comes within an eighth of its limit and stays there (a plan would be kept)
    used = int((cgroups.path(top) / "memory.usage_in_bytes").read_text())
    near = (LIMIT - LIMIT // 8 - used >> 20) + 4
    filler = cgroups.spawn(other, [sys.executable, str(HELPERS / "grow.py"), "1024", str(near)])
    assert filler.stdout is not None
    assert filler.stdout.readline() == b"survived\n"
    dm.wait_for("plan_refused", top, timeout=30)
    time.sleep(4)  # near all along: a refresh was due every second
    assert len(refused_for(dm, top)) == 1, refused_for(dm, top)
    # root's memcg runs out while jobs is near: its reaction is its own
    upto = (64 - (int((cgroups.path(solo) / "memory.usage_in_bytes").read_text()) >> 20)) + 6
    grow = [sys.executable, str(HELPERS / "grow.py"), "1024", str(upto), "0.005"]
    grower = cgroups.spawn(high, grow)
    assert solo_victim.wait(timeout=60) == -signal.SIGKILL
    _, kill = dm.wait_for("daemon_kill", solo)
    assert f"pid={solo_victim.pid} " in kill and f"victim_cgroup={low}" in kill, kill
    assert grower.stdout is not None
    assert grower.stdout.readline() == b"survived\n"
    for cg in (solo, low, high):
        assert oom_control(cgroups, cg)["oom_kill"] == 0  # the kernel killed nobody
    dm.wait_for("oom_resolved", solo)
    # then the tenant's domain runs out: chosen at the event, the tenant's work dies
    upto = (LIMIT - int((cgroups.path(top) / "memory.usage_in_bytes").read_text()) >> 20) + 10
    push = cgroups.spawn(other, [sys.executable, str(HELPERS / "grow.py"), "1024", str(upto)])
    assert victim.wait(timeout=60) == -signal.SIGKILL
    killed_at = time.time()
    _, kill = dm.wait_for("daemon_kill", top)
    assert f"pid={victim.pid} " in kill and f"victim_cgroup={work}" in kill, kill
    assert " plan_age_ms=" not in kill, kill
    assert push.stdout is not None
    assert push.stdout.readline() == b"survived\n"
    for cg in (top, deleg, other, work):
        assert oom_control(cgroups, cg)["oom_kill"] == 0
    dm.wait_for("oom_resolved", top)
    # the tenant's tree never changed: its domain was chosen over once (and at the event)
    assert len(refused_for(dm, top)) == 1, refused_for(dm, top)
    contained_and_alive(cgroups, cgroups.path(deleg), dm, tmp_path, killed_at, roots, before)
