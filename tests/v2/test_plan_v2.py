"""The daemon's standing plan on cgroup v2, in the guest (issue 22): a delay-0 memcg
whose committed memory comes within one headroom of its valve has its victim chosen
ahead; at the valve's event the plan is used (``plan_age_ms``), the policy's victim
dies first and ``memory.events oom_kill`` of the OOM domain stays 0.  Near is told by
the kernel: the valve's lower step (memory.high at the near line) raises a ``high``
event there, and the daemon raises memory.high to the valve and chooses."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from memcgctl.daemon.valve import MIB, lines, low_high
from tests.realkernel import TestCgroups
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.v2.test_daemon_v2 import LIMIT, field, grow, high, jobs, no_kernel_kill

__all__ = ["daemons", "jobs"]


def test_near_the_valve_the_victim_is_chosen_ahead_and_dies_at_the_event(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = jobs["top"]
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    small = cgroups.hog(jobs["low"], mib=40)  # the policy's victim
    big = cgroups.hog(jobs["high"], mib=120)  # the kernel's: the biggest
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    # 1 MiB every 40 ms: about a second between 80 % of memory.max (one headroom
    # below the valve: near, seen at a rescan every 200 ms) and the valve at 90 %
    g = grow(cgroups, jobs["high"], 0.04)
    _, kill = d.wait_for("daemon_kill", top, timeout=120)
    _, under = d.wait_for("under_oom", top, timeout=5)
    assert field(kill, "pid") == str(small.pid), kill
    assert " plan_age_ms=" in kill, "\n".join(t for _, t in d.lines)  # the plan held
    assert " time=" in under  # written after the signal, stamped with the episode's start
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    g.wait(timeout=30)
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    assert d.stop() == 0


def test_a_fast_grower_is_told_near_by_the_lower_steps_event_and_the_plan_is_used(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """200 MB/s with rescans 10 s apart: only the kernel's high event at the lower step
    can say "near" in time.  memory.high is raised to the valve at it, the victim is
    chosen ahead and dies at the valve's event; afterwards the step is taken again, and
    released, memory.high is the user's own value again."""
    top = jobs["top"]
    user = 250 * MIB  # the user's own memory.high, above the valve
    (cgroups.path(top) / "memory.high").write_text(f"{user}\n")
    ln = lines(LIMIT, 0.10)
    low = low_high(ln)
    assert low is not None
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    small = cgroups.hog(jobs["low"], mib=40)  # the policy's victim
    big = cgroups.hog(jobs["high"], mib=120)  # the kernel's: the biggest
    d = Daemon(tmp_path, cgroups.parent, "--rescan", "10s")
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    d.wait_for("valve_lowered", top, timeout=30)
    assert high(cgroups, top) == str(low)
    g = grow(cgroups, jobs["high"], 0.005)
    _, kill = d.wait_for("daemon_kill", top, timeout=120)
    t_raised, raised = d.wait_for("valve_raised", top, timeout=5)
    assert field(raised, "memory_high") == str(ln.line), raised
    log = "\n".join(t for _, t in d.lines)
    assert field(kill, "pid") == str(small.pid), log
    assert " plan_age_ms=" in kill, log  # chosen ahead, after the raise
    assert log.index("valve_raised") < log.index("daemon_kill")
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    g.wait(timeout=30)
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    d.wait_for("oom_resolved", top, timeout=30)
    deadline = t_raised + 60
    while d.kinds().count("valve_lowered") < 2:  # back well below: the step again
        assert time.monotonic() < deadline, log
        time.sleep(0.1)
    assert d.stop() == 0
    assert high(cgroups, top) == str(user)
