"""``daemon --pre-kill`` / ``--post-kill`` with real OOMs on v1 (issue 24): the pre-kill
hook sees the victim alive with its pid, cgroup and badness; the post-kill hook runs
after it died; a hook that hangs is stopped at the kill's deadline (with its children)
and never delays the kill."""

from __future__ import annotations

import os
import shlex
import signal
from pathlib import Path

import pytest

from tests.realkernel import TestCgroups, wait_until
from tests.test_daemon_kernel import Daemon, daemons, grower, jobs, set_xattr  # noqa: F401

pytestmark = pytest.mark.kernel

RECORD = (
    'echo "$MEMCGCTL_HOOK $MEMCGCTL_VICTIM_PID $MEMCGCTL_VICTIM_CGROUP '
    "$MEMCGCTL_VICTIM_BADNESS $MEMCGCTL_OOM_CGROUP alive=$(kill -0 $MEMCGCTL_VICTIM_PID "
    '2>/dev/null && echo yes || echo no) killed=$MEMCGCTL_KILLED_PIDS" >> {out}'
)


def fields(line: str) -> dict[str, str]:
    return dict(f.split("=", 1) for f in shlex.split(line)[1:] if "=" in f)


def test_pre_and_post_kill_hooks_see_the_victim(
    cgroups: TestCgroups,
    jobs: dict[str, str],  # noqa: F811
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    out = tmp_path / "hooks.log"
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "1500")
    record = RECORD.format(out=shlex.quote(str(out)))
    d = Daemon(tmp_path / "state", cgroups.parent, "--pre-kill", record, "--post-kill", record)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, jobs["low"])
    d.wait_for("under_oom", jobs["top"])
    assert g.wait(timeout=20) == -signal.SIGKILL
    d.wait_for("daemon_kill", jobs["top"])
    wait_until(lambda: out.exists() and len(out.read_text().splitlines()) == 2, "both hooks")
    pre, post = out.read_text().splitlines()
    low, top = jobs["low"], jobs["top"]
    assert pre == f"pre-kill {g.pid} {low} 500 {top} alive=yes killed="  # its own badness
    # right after the signal: the victim may still be exiting (or a zombie of ours)
    assert post.startswith(f"post-kill {g.pid} {low} 500 {top} alive=")
    assert post.endswith(f" killed={g.pid}")
    _, done = d.wait_for("hook_done", top)
    assert fields(done)["exit"] == "0"


def test_a_hanging_pre_kill_hook_is_stopped_at_the_deadline(
    cgroups: TestCgroups,
    jobs: dict[str, str],  # noqa: F811
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    """The hook would sleep 100 s and may take 30 s; the delay is 1 s: the victim dies
    at the deadline, the hook (and the sleep it started) is killed then."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "1000")
    hang = "sleep 100; echo never"
    d = Daemon(tmp_path / "state", cgroups.parent, "--pre-kill", hang, "--hook-timeout", "30s")
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, jobs["low"])
    _, started = d.wait_for("hook_started", jobs["top"])
    hook = int(fields(started)["hook_pid"])
    assert int(fields(started)["budget_ms"]) <= 1000  # never past the deadline
    assert g.wait(timeout=20) == -signal.SIGKILL
    _, kill = d.wait_for("daemon_kill", jobs["top"])
    _, stopped = d.wait_for("hook_timeout", jobs["top"])
    f = fields(stopped)
    assert f["reason"] == "deadline" and int(f["after_ms"]) < 30_000
    assert int(fields(kill)["pid"]) == g.pid
    lines = [text for _, text in d.lines]
    assert lines.index(stopped) < lines.index(kill)  # stopped just before the signal

    def session_left() -> list[int]:
        left = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if int(stat[3]) == hook:  # session id: the hook and its children
                    left.append(int(p))
        return left

    wait_until(lambda: not session_left(), "the hook's processes to be gone")
