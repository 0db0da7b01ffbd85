"""The tree watch against the real v1 kernel: what cgroupfs reports to inotify (mkdir,
rmdir, setxattr, a write to a limit file), a daemon that takes over a new cgroup and
releases a removed one with no periodic rescan due (``--rescan 10m``), and a delegated
user's mkdir/rmdir churn that neither stalls the daemon's kill nor makes it act on
the user's cgroups."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from memcgctl.daemon.treewatch import TreeWatch
from memcgctl.env import Env
from memcgctl.kernel import inotify as ino
from memcgctl.vocab.cgpath import CgroupPath
from tests.realkernel import TestCgroups, journaled, wait_until
from tests.test_daemon_hardening_kernel import NOBODY, SETPRIV, SYSTEM_PYTHON, kernel_kills
from tests.test_daemon_kernel import Daemon, daemons, grower, jobs, oom_control, set_xattr
from tests.test_treewatch_unit import drain

pytestmark = pytest.mark.kernel
__all__ = ["daemons", "jobs"]  # fixtures used here

NO_PERIODIC_RESCAN = ("--rescan", "10m")


def test_cgroupfs_reports_mkdir_rmdir_xattrs_and_limit_writes(cgroups: TestCgroups) -> None:
    """The kernel is the oracle for what the watch relies on (kernel/inotify.py)."""
    fs = Env(cgroup_root=cgroups.mount).fs
    top = cgroups.make("w")
    tw = TreeWatch(fs, CgroupPath(top), lambda *a: None)
    assert tw.refresh().full and tw.off_reason is None

    kid = cgroups.make("w/kid")  # IN_CREATE|IN_ISDIR
    assert drain(tw)
    p = tw.refresh()
    assert kid in p.created and not p.full

    os.setxattr(cgroups.path(kid), "trusted.memcgctl.oom_delay_ms", b"3")  # IN_ATTRIB
    assert drain(tw)
    assert kid in tw.refresh().changed
    os.setxattr(cgroups.path(kid), "user.memcgctl.badness", b"700")
    assert drain(tw)
    assert kid in tw.refresh().changed

    tw.follow(CgroupPath(kid), CgroupPath(kid), 1)
    assert not drain(tw)
    cgroups.set_limit(kid, 32 << 20)  # IN_MODIFY on memory.limit_in_bytes
    assert drain(tw)
    tw.unfollow(CgroupPath(kid))

    os.rmdir(cgroups.path(kid))  # IN_DELETE|IN_ISDIR
    assert drain(tw)
    assert kid in tw.refresh().removed
    assert tw.stats["walks"] == 1
    tw.close()


def test_a_new_cgroup_is_managed_and_a_removed_one_released_without_a_rescan(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    first = cgroups.make("first", limit=64 << 20)
    set_xattr(cgroups, first, "oom_delay_ms", "0")
    daemon = Daemon(tmp_path, cgroups.parent, *NO_PERIODIC_RESCAN)
    daemons.append(daemon)
    daemon.wait_for("daemon_took_over", first)  # the first rescan (a walk) is over
    late = cgroups.make("late", limit=64 << 20)
    set_xattr(cgroups, late, "oom_delay_ms", "0")
    daemon.wait_for("daemon_took_over", late)
    assert oom_control(cgroups, late)["oom_kill_disable"] == 1  # paused by the daemon
    os.removexattr(cgroups.path(late), "trusted.memcgctl.oom_delay_ms")
    daemon.wait_for("daemon_released", late)
    assert oom_control(cgroups, late)["oom_kill_disable"] == 0  # given back

    again = cgroups.make("again", limit=64 << 20)
    set_xattr(cgroups, again, "oom_delay_ms", "0")
    daemon.wait_for("daemon_took_over", again)
    os.rmdir(cgroups.path(again))
    daemon.wait_for("daemon_released", again)
    assert "tree_watch_off" not in daemon.kinds()
    assert daemon.stop() == 0


# As nobody, in its delegated cgroup: make n cgroups as fast as it can, then churn
# (mkdir + rmdir) n more times; print how many it made.
_CHURN_AS_NOBODY = r"""
import os, sys
top, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    os.mkdir(os.path.join(top, f"c{i}"))
for i in range(n):
    d = os.path.join(top, f"t{i % 7}")
    os.mkdir(d)
    os.rmdir(d)
print(n, flush=True)
"""


@pytest.mark.skipif(
    shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs setpriv and /usr/bin/python3 to run the attacker as nobody",
)
def test_a_users_mkdir_churn_neither_stalls_the_daemon_nor_moves_it_outside(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """nobody makes 5,000 cgroups and churns 5,000 more in its delegation while root's
    managed memcg OOMs: the daemon still kills the policy's victim (not the kernel),
    manages none of nobody's cgroups, and a cgroup made after the churn is still taken
    over at once (the watch survived it: no periodic rescan is due)."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    deleg = cgroups.make("deleg", limit=64 << 20)
    d = cgroups.path(deleg)
    for f in [d, d / "cgroup.procs", d / "tasks"]:
        os.chown(f, NOBODY, NOBODY)
    daemon = Daemon(tmp_path, cgroups.parent, *NO_PERIODIC_RESCAN)
    daemons.append(daemon)
    daemon.wait_for("daemon_took_over", jobs["top"])
    before = kernel_kills(cgroups, jobs)
    n = 5000
    churn = subprocess.Popen(
        [*SETPRIV, SYSTEM_PYTHON, "-c", _CHURN_AS_NOBODY, str(d), str(n)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        g = grower(cgroups, jobs["low"])
        assert g.wait(timeout=60) == -signal.SIGKILL
        journaled(tmp_path, "user_kill", g.pid)
        out, err = churn.communicate(timeout=300)
    finally:
        if churn.poll() is None:
            churn.kill()
            churn.wait()
    assert churn.returncode == 0, err
    assert out.split() == [str(n)]
    assert kernel_kills(cgroups, jobs) == before  # the daemon's kill, not the kernel's
    assert daemon.proc.poll() is None
    after = cgroups.make("after", limit=64 << 20)
    set_xattr(cgroups, after, "oom_delay_ms", "0")
    daemon.wait_for("daemon_took_over", after, timeout=30)
    took = [t for _, t in daemon.lines if "daemon_took_over" in t]
    assert not [t for t in took if f"cgroup={deleg}" in t or f"{deleg}/" in t], took
    assert "daemon_error" not in daemon.kinds()
    assert daemon.stop() == 0


def test_inotify_event_layout_matches_the_kernels(cgroups: TestCgroups) -> None:
    """parse() reads the kernel's struct inotify_event (names padded with NULs)."""
    i = ino.Inotify()
    try:
        wd = i.add(str(cgroups.path(cgroups.parent)), ino.IN_CREATE | ino.IN_ONLYDIR)
        name = "a-rather-long-cgroup-name-" + "x" * 40
        cgroups.make(name)
        (ev,) = i.read()
        assert (ev.wd, ev.name) == (wd, name)
        assert ev.mask == ino.IN_CREATE | ino.IN_ISDIR
    finally:
        i.close()


def test_a_cgroup_rule_reaches_a_new_cgroup_and_its_delay_takes_it_over(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A unit's cgroup made after the daemon started (no periodic rescan due): the
    rules give it a delay and a badness as it appears, and the daemon takes it over."""
    rules = tmp_path / "rules.d"
    rules.mkdir(mode=0o755)
    (rules / "20-svc.toml").write_text(
        f'[[rule]]\nname = "svc-managed"\ncgroup = "{cgroups.parent}/svc*"\noom_delay = "0"\n'
        f"badness = 200\n"
    )
    first = cgroups.make("svc-first", limit=64 << 20)
    d = Daemon(tmp_path / "state", cgroups.parent, "--rules", str(rules), *NO_PERIODIC_RESCAN)
    daemons.append(d)
    d.wait_for("daemon_took_over", first)  # the first rescan (a walk) is over
    svc = cgroups.make("svc-web", limit=64 << 20)
    _, line = d.wait_for("rule_applied", svc)
    assert "rule=svc-managed" in line
    d.wait_for("daemon_took_over", svc)
    xattr = os.getxattr(cgroups.path(svc), "trusted.memcgctl.badness").decode()
    assert xattr == "200"
    assert oom_control(cgroups, svc)["oom_kill_disable"] == 1
    assert d.stop() == 0


def test_cgroups_past_path_max_are_watched_too(cgroups: TestCgroups) -> None:
    """A user's chain of long names past PATH_MAX (issue 21): watched through
    /proc/self/fd like every other access to it, not a reason to stop watching."""
    fd = os.open(cgroups.path(cgroups.parent), os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(25):  # 25 × 201 bytes
            os.mkdir("n" * 200, dir_fd=fd)
            nfd = os.open("n" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        fs = Env(cgroup_root=cgroups.mount).fs
        tw = TreeWatch(fs, CgroupPath(cgroups.parent), lambda *a: None)
        tw.refresh()
        assert tw.off_reason is None and len(tw.inodes) == 26
        os.mkdir("deep", dir_fd=fd)
        assert drain(tw)
        (made,) = tw.refresh().created
        assert made.endswith("/deep") and len(made) > 4096
        os.rmdir("deep", dir_fd=fd)
        assert drain(tw)
        assert made in tw.refresh().removed
        tw.close()
    finally:
        os.close(fd)


def test_a_unit_restart_remaking_its_cgroup_is_taken_over_afresh(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """rmdir + mkdir at once (a restarting unit; its delay comes back from a rule): the
    daemon lets go of the old cgroup and pauses the new one, no periodic rescan due."""
    rules = tmp_path / "rules.d"
    rules.mkdir(mode=0o755)
    (rules / "20-unit.toml").write_text(
        f'[[rule]]\nname = "unit"\ncgroup = "{cgroups.parent}/unit"\noom_delay = "0"\n'
    )
    unit = cgroups.make("unit", limit=64 << 20)
    d = Daemon(tmp_path / "state", cgroups.parent, "--rules", str(rules), *NO_PERIODIC_RESCAN)
    daemons.append(d)
    d.wait_for("daemon_took_over", unit)
    os.rmdir(cgroups.path(unit))
    os.mkdir(cgroups.path(unit))  # at once: one batch of events, most likely one pass
    cgroups.set_limit(unit, 64 << 20)
    wait_until(lambda: oom_control(cgroups, unit)["oom_kill_disable"] == 1 or None, "paused")
    took = [t for _, t in d.lines if "daemon_took_over" in t and f"cgroup={unit} " in t]
    assert len(took) == 2, d.lines
    assert "daemon_error" not in d.kinds()
    assert d.stop() == 0
    assert oom_control(cgroups, unit)["oom_kill_disable"] == 0


def test_a_tenants_churn_of_names_moves_only_its_own_domains_mark(cgroups: TestCgroups) -> None:
    churn_moves_only_the_tenants_mark(cgroups)


def churn_moves_only_the_tenants_mark(cgroups: TestCgroups) -> None:
    """nobody, in its delegated subtree, makes and removes 1,500 cgroups of distinct
    names (more than the mark remembers, RECENT): the mark of its domain moves, the
    mark of root's memcg beside it stands (the standing plan there is not chosen
    again), and nothing is left outside nobody's subtree.  (v1 here, v2 in the guest:
    tests/v2/test_treewatch_v2.py)"""
    from memcgctl.daemon.treewatch import RECENT
    from tests.test_delegation_kernel import delegate

    churn = 1500
    assert churn > RECENT
    jobs, solo = cgroups.make("jobs"), cgroups.make("solo")
    cgroups.make("solo/low")
    deleg = cgroups.make("jobs/deleg")
    d = delegate(cgroups, deleg)
    tw = TreeWatch(Env(cgroup_root=cgroups.mount).fs, CgroupPath(cgroups.parent), lambda *a: None)
    tw.refresh()
    assert tw.off_reason is None
    solo_mark, jobs_mark = tw.mark(CgroupPath(solo)), tw.mark(CgroupPath(jobs))
    script = (
        "import os, sys\n"
        "d = sys.argv[1]\n"
        "for i in range(int(sys.argv[2])):\n"
        "    p = os.path.join(d, f'e{i}')\n"
        "    os.mkdir(p)\n"
        "    os.rmdir(p)\n"
    )
    r = subprocess.run(
        [*SETPRIV, SYSTEM_PYTHON, "-c", script, str(d), str(churn)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    drain(tw)
    assert tw.stats["overflows"] == 0 and tw.stats["events"] >= 2 * churn
    assert tw.mark(CgroupPath(solo)) == solo_mark  # root's: unchanged
    moved = tw.mark(CgroupPath(jobs))
    assert moved is not None and moved != jobs_mark  # the tenant's domain: moved
    assert [p.name for p in d.iterdir() if p.is_dir()] == []  # nobody removed its own
    assert os.stat(d).st_uid == NOBODY
    tw.close()
