"""Issue 22 in the guest: no whole-tree walk on the OOM path.  With too few inotify
watches for the tree (``fs.inotify.max_user_watches`` cut short: ``tree_watch_off``)
every rescan walks the whole tree, here a node's 2,000 memcgs (tests/nodetree.py); the
loop holds those walks back while an episode is under way (daemon/loop.py:
``BUSY_RESCAN_S``, 10 s at most).  Seen from the daemon's own ``tree_walk`` debug
lines: walks back to back before the OOM, none from ``under_oom`` to the kill (nor,
within the cap, to ``oom_resolved``), the next one after it; the policy's victim died
and the kernel's OOM killer killed nobody."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from memcgctl.daemon.loop import BUSY_RESCAN_S
from tests.nodetree import build_system, build_tree, node_shape
from tests.realkernel import TestCgroups, subdirs, wait_until
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.v2.test_daemon_v2 import field, grow, jobs, no_kernel_kill

__all__ = ["daemons", "jobs"]
CGROUPS = 2000
WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
FEW_WATCHES = 512  # the daemon takes at most half: far too few for the tree


@pytest.fixture
def few_watches() -> Iterator[None]:
    """The throw-away guest's inotify watches cut short, restored afterwards."""
    was = WATCHES.read_text()
    WATCHES.write_text(f"{FEW_WATCHES}\n")
    try:
        yield
    finally:
        WATCHES.write_text(was)


def test_no_whole_tree_walk_between_the_oom_and_the_kill(
    cgroups: TestCgroups,
    jobs: dict[str, str],
    few_watches: None,
    tmp_path: Path,
    daemons: list[Daemon],
) -> None:
    pods, services = node_shape(CGROUPS)
    build_tree(cgroups, pods)
    build_system(cgroups, services)
    assert len(subdirs(cgroups.path(cgroups.parent))) >= CGROUPS
    top = jobs["top"]
    # a delay: the episode lasts seconds, several rescans' worth (every 200 ms here)
    set_xattr(cgroups, top, "oom_delay_ms", "2000")
    victim = cgroups.hog(jobs["low"], mib=40)  # the policy's victim
    big = cgroups.hog(jobs["high"], mib=120)  # the kernel's: the biggest
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("tree_watch_off", cgroups.parent, timeout=180)
    d.wait_for("daemon_took_over", top, timeout=180)

    def walks() -> list[tuple[int, float]]:
        """(line index, arrival) of each tree_walk line so far."""
        return [(i, t) for i, (t, x) in enumerate(list(d.lines)) if x.startswith("<7>tree_walk ")]

    wait_until(lambda: len(walks()) >= 4 or None, "walks per rescan", timeout=120)
    assert all(" why=no_watches " in d.lines[i][1] for i, _ in walks()[1:])
    g = grow(cgroups, jobs["high"], 0.02)
    d.wait_for("under_oom", top, timeout=120)
    _, kill = d.wait_for("daemon_kill", top, timeout=60)
    assert field(kill, "pid") == str(victim.pid), kill
    assert victim.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    g.wait(timeout=30)
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    d.wait_for("oom_resolved", top, timeout=60)

    def index(kind: str) -> int:
        return next(i for i, (_, x) in enumerate(d.lines) if x.split(" ", 1)[0].endswith(kind))

    resolved = index(">oom_resolved")
    wait_until(lambda: walks()[-1][0] > resolved or None, "a walk after the OOM", timeout=60)
    under, killed = index(">under_oom"), index(">daemon_kill")
    log = "\n".join(x for _, x in d.lines)
    before = [t for i, t in walks() if i < under]
    during = [(i, t) for i, t in walks() if under < i < resolved]
    assert not [i for i, _ in during if i < killed], log  # none on the way to the kill
    # from the kill to oom_resolved: only once the last walk is BUSY_RESCAN_S old
    for _, t in during[:1]:
        assert t - before[-1] >= BUSY_RESCAN_S - 0.5, log
    assert d.stop() == 0
