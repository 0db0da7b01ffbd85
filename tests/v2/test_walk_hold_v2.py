"""Issue 22 in the guest: no whole-tree walk on the OOM path.  With too few inotify
watches for the tree (``fs.inotify.max_user_watches`` cut short: ``tree_watch_off``)
every rescan walks the whole tree, here a node's 2,000 memcgs (tests/nodetree.py); the
loop holds those walks back while an episode is under way (daemon/loop.py:
``BUSY_RESCAN_S``, 10 s at most).  Seen from the daemon's own ``tree_walk`` debug
lines: walks back to back before the OOM, none from ``under_oom`` to the kill (nor,
within the cap, to ``oom_resolved``), the next one after it; in an episode longer than
the cap, one walk once the last is 10 s old; each time the policy's victim died and the
kernel's OOM killer killed nobody.  The time in the emulated guest (2026-12-07): 44-60 s,
and 4-9 s to remove the tree; a walk of it took about 1 s there."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from memcgctl.daemon.loop import BUSY_RESCAN_S
from memcgctl.daemon.valve import committed
from tests.nodetree import build_system, build_tree, node_shape
from tests.realkernel import TestCgroups, subdirs, wait_until
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.v2.test_daemon_v2 import LIMIT, MIB, field, grow, high, jobs, no_kernel_kill

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


def lines_of(d: Daemon, kind: str) -> list[int]:
    """The indexes of the daemon's ``kind`` lines so far."""
    return [i for i, (_, x) in enumerate(list(d.lines)) if x.split(" ", 1)[0].endswith(">" + kind)]


def walks(d: Daemon) -> list[tuple[int, float]]:
    """(line index, arrival) of each whole-tree walk so far (its ``tree_walk`` line)."""
    return [(i, d.lines[i][0]) for i in lines_of(d, "tree_walk")]


def committed_now(tc: TestCgroups, cg: str) -> int:
    """What the valve counts: memory.current less the page cache (no swap here)."""
    stat = (tc.path(cg) / "memory.stat").read_text().split("\n")
    fields = {k: int(v) for k, v in (line.split() for line in stat if line)}
    return committed(int((tc.path(cg) / "memory.current").read_text()), fields, 0)


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
    wait_until(lambda: len(walks(d)) >= 4 or None, "walks per rescan", timeout=120)
    assert all(" why=no_watches " in d.lines[i][1] for i, _ in walks(d)[1:])

    g = grow(cgroups, jobs["high"], 0.02)
    d.wait_for("under_oom", top, timeout=120)
    _, kill = d.wait_for("daemon_kill", top, timeout=60)
    assert field(kill, "pid") == str(victim.pid), kill
    assert victim.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    g.wait(timeout=30)
    d.wait_for("oom_resolved", top, timeout=60)
    (resolved,) = lines_of(d, "oom_resolved")
    wait_until(lambda: walks(d)[-1][0] > resolved or None, "a walk after the OOM", timeout=60)
    (under,), (killed,) = lines_of(d, "under_oom"), lines_of(d, "daemon_kill")
    log = "\n".join(x for _, x in d.lines)
    before = [t for i, t in walks(d) if i < under]
    during = [(i, t) for i, t in walks(d) if under < i < resolved]
    assert not [i for i, _ in during if i < killed], log  # none on the way to the kill
    # from the kill to oom_resolved: only once the last walk is BUSY_RESCAN_S old
    for _, t in during[:1]:
        assert t - before[-1] >= BUSY_RESCAN_S - 0.5, log

    # An episode longer than the cap: the walk held back runs once the last one is
    # BUSY_RESCAN_S old, in the episode, and the kill at its deadline still comes.
    set_xattr(cgroups, top, "oom_delay_ms", str(int(BUSY_RESCAN_S * 1000) + 5000))
    d.wait_for("daemon_delay_changed", top, timeout=60)
    victim = cgroups.hog(jobs["low"], mib=8)
    # to halfway from the valve to memory.max (below the freeze line): an episode that
    # lasts until its delay is over
    valve_at = int(high(cgroups, top))
    upto = (valve_at + (LIMIT - valve_at) // 2 - committed_now(cgroups, top)) // MIB - 10
    g = grow(cgroups, jobs["high"], 0.01, upto_mib=upto)  # (- 10: its interpreter's)
    wait_until(lambda: len(lines_of(d, "daemon_kill")) == 2 or None, "a second kill", timeout=60)
    under, killed = lines_of(d, "under_oom")[1], lines_of(d, "daemon_kill")[1]
    log = "\n".join(x for _, x in d.lines)
    assert field(d.lines[killed][1], "pid") == str(victim.pid), log
    assert victim.wait(timeout=30) == -signal.SIGKILL
    last = [t for i, t in walks(d) if i < under][-1]
    during = [(i, t) for i, t in walks(d) if under < i < killed]
    assert len(during) == 1, log  # the one the cap let through, no other
    assert during[0][1] - last >= BUSY_RESCAN_S - 0.5, log
    g.kill()
    g.wait(timeout=30)
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    assert d.stop() == 0
