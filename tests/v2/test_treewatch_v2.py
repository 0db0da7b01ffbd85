"""The tree watch on cgroup v2 in the guest: with no periodic rescan due (``--rescan
10m``), a new cgroup with a badness and a delay gets its valve, a write to a managed
memcg's ``memory.max``/``memory.high`` from outside (what systemd does for
``MemoryMax=``/``MemoryHigh=``) moves the valve at once (SPEC §7), and with
``fs.inotify.max_user_watches`` too low the daemon says so once and walks per rescan."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from tests.realkernel import TestCgroups, wait_until
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.test_treewatch_kernel import churn_moves_only_the_tenants_mark
from tests.v2.test_daemon_v2 import MIB, field, high, valves

__all__ = ["daemons"]
NO_PERIODIC_RESCAN = ("--rescan", "10m")
MAX_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")


def test_a_new_cgroup_gets_its_valve_and_outside_limit_writes_move_it(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    d = Daemon(tmp_path, cgroups.parent, *NO_PERIODIC_RESCAN)
    daemons.append(d)
    d.wait_for("daemon_started", timeout=60)
    svc = cgroups.make("svc", limit=200 * MIB)
    kid = cgroups.make("svc/worker", limit=None)
    set_xattr(cgroups, kid, "badness", "900")
    set_xattr(cgroups, svc, "oom_delay_ms", "0")
    d.wait_for("daemon_took_over", svc, timeout=60)
    wait_until(lambda: high(cgroups, svc) in valves(200 * MIB, 0), "the valve installed")

    # systemd's MemoryMax=: the valve follows the new limit
    TestCgroups.write(cgroups.path(svc), "memory.max", str(128 * MIB))
    _, line = d.wait_for("valve_moved", svc, timeout=60)
    assert field(line, "limit") == str(128 * MIB)
    wait_until(lambda: high(cgroups, svc) in valves(128 * MIB, 0), "the valve moved")

    # systemd's MemoryHigh= below the valve: it becomes the user's own value, kept
    user_high = 64 * MIB
    TestCgroups.write(cgroups.path(svc), "memory.high", str(user_high))
    wait_until(
        lambda: [t for _, t in d.lines if "valve_moved" in t and f"={user_high}" in t],
        "the user's memory.high noticed",
        timeout=60,
    )
    assert high(cgroups, svc) == str(user_high)
    assert "tree_watch_off" not in d.kinds()
    assert d.stop() == 0
    assert high(cgroups, svc) == str(user_high)  # released: the user's value stays


def test_too_few_watches_fall_back_to_walking_said_once(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    for i in range(12):
        cgroups.make(f"many/c{i}", limit=None)
    saved = MAX_WATCHES.read_text()
    MAX_WATCHES.write_text("8\n")  # fewer than the tree's directories (the guest only)
    try:
        d = Daemon(tmp_path, cgroups.parent, "--rescan", "200ms")
        daemons.append(d)
        _, line = d.wait_for("tree_watch_off", timeout=60)
        assert "max_user_watches" in line
        late = cgroups.make("late", limit=128 * MIB)
        set_xattr(cgroups, late, "oom_delay_ms", "0")
        d.wait_for("daemon_took_over", late, timeout=60)  # by the walk per rescan
        assert d.kinds().count("tree_watch_off") == 1
        assert d.stop() == 0
    finally:
        with contextlib.suppress(OSError):
            MAX_WATCHES.write_text(saved)
    assert MAX_WATCHES.read_text() == saved
    assert os.path.exists(cgroups.path(late))


def test_a_tenants_churn_of_names_moves_only_its_own_domains_mark(cgroups: TestCgroups) -> None:
    """v2: nobody's 1,500 cgroups made and removed in its delegated subtree move its
    domain's tree mark, not that of root's memcg beside it."""
    churn_moves_only_the_tenants_mark(cgroups)
