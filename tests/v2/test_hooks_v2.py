"""Daemon hooks on cgroup v2 (issue 24): the pre-kill hook sees the valve's victim alive,
a hanging one is stopped at the deadline, the victim dies at the valve and the kernel
kills nobody."""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

from tests.realkernel import TestCgroups, wait_until
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.v2.test_daemon_v2 import field, grow, jobs, no_kernel_kill

__all__ = ["daemons", "jobs"]


def test_hooks_around_a_valve_kill(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = jobs["top"]
    out = tmp_path / "hooks.log"
    set_xattr(cgroups, top, "oom_delay_ms", "3000")  # time for sh to start in the slow guest
    small = cgroups.hog(jobs["low"], mib=40)  # the policy's victim
    big = cgroups.hog(jobs["high"], mib=120)
    pre = (
        f'echo "pre $MEMCGCTL_VICTIM_PID $MEMCGCTL_VICTIM_CGROUP '
        f'$(kill -0 $MEMCGCTL_VICTIM_PID && echo alive)" >> {shlex.quote(str(out))}; sleep 100'
    )
    post = f'echo "post $MEMCGCTL_KILLED_PIDS" >> {shlex.quote(str(out))}'
    d = Daemon(
        tmp_path / "state",
        cgroups.parent,
        "--pre-kill",
        pre,
        "--post-kill",
        post,
        "--hook-timeout",
        "30s",
    )
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    g = grow(cgroups, jobs["high"], 0.02)
    d.wait_for("hook_started", top, timeout=60)
    _, kill = d.wait_for("daemon_kill", top, timeout=60)
    assert field(kill, "pid") == str(small.pid)
    _, stopped = d.wait_for("hook_timeout", top, timeout=60)
    # stopped at the kill's deadline, or at its own time (which never goes past the
    # deadline: an episode the valve restarted moves the deadline, not the hook's time)
    assert field(stopped, "reason") in ("deadline", "timeout")
    lines = [text for _, text in d.lines]
    assert lines.index(stopped) < lines.index(kill)  # the hang was over before the kill
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    g.wait(timeout=30)
    wait_until(lambda: out.exists() and "post" in out.read_text(), "the post-kill hook")
    assert out.read_text().splitlines() == [  # (both, in order)
        f"pre {small.pid} {jobs['low']} alive",
        f"post {small.pid}",
    ]
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    assert d.stop() == 0
