"""Issue 21 (items 4-7) against the real v1 kernel: the one-daemon claim under a delay
injector, a dying victim killed once, a stopped daemon's memcg released by the
guardian, a user's flood that cannot erase another user's history."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.realkernel import TestCgroups
from tests.test_daemon_kernel import (
    REPO,
    Daemon,
    daemons,
    grower,
    jobs,
    oom_control,
    set_xattr,
    wait_dead,
)

pytestmark = pytest.mark.kernel
__all__ = ["daemons", "jobs"]  # fixtures used here

DELAY_XATTR_WRITES = "inject=lsetxattr,setxattr,fsetxattr:delay_enter=2000000"


class TracedDaemon(Daemon):
    """A daemon under ``strace`` whose every xattr write is delayed by 2 s."""

    def __init__(self, state: Path, root: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [
                *("strace", "-f", "-qq", "-o", "/dev/null", "-e", DELAY_XATTR_WRITES),
                *(sys.executable, "-m", "memcgctl", "--state-dir", str(state), "daemon"),
                *("--root", root, "--rescan", "200ms", *extra),
            ],
            cwd=REPO,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def daemon_pid(self) -> int | None:
        """The daemon itself: strace's child."""
        try:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        except OSError:
            return None
        return int(kids.split()[0]) if kids.split() else None

    def stop(self, sig: int = signal.SIGTERM) -> int:
        # strace detaches on SIGTERM and leaves the daemon running: signal the daemon
        pid = self.daemon_pid()
        if pid is not None and self.proc.poll() is None:
            os.kill(pid, sig)
        return self.proc.wait(timeout=15)


def user_kills(state: Path) -> list[dict[str, object]]:
    import json

    out = []
    for name in ("journal.jsonl.2", "journal.jsonl.1", "journal.jsonl"):
        path = state / name
        if path.exists():
            out += [json.loads(line) for line in path.read_text().splitlines() if line]
    return [r for r in out if r.get("kind") == "user_kill"]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace for the delay")
def test_two_daemons_at_once_with_slow_xattr_writes_one_takes_over(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Item 5: the claim is a lock the kernel arbitrates.  Two daemons started at once
    on the same memcg, one with every xattr write delayed 2 s: one runs, the other
    refuses (exit 1, naming it), and one OOM kills exactly one process."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    big = cgroups.hog(jobs["high"], mib=40)
    slow = TracedDaemon(tmp_path, cgroups.parent)
    fast = Daemon(tmp_path, cgroups.parent)
    daemons.extend([slow, fast])
    codes = {}
    for d in (slow, fast):
        with contextlib.suppress(subprocess.TimeoutExpired):
            codes[d] = d.proc.wait(timeout=8)
    assert len(codes) == 1, "exactly one daemon must refuse to start"
    ((loser, code),) = codes.items()
    winner = fast if loser is slow else slow
    assert code == 1
    said = "\n".join(text for _, text in loser.lines)
    winner_pid = slow.daemon_pid() if winner is slow else fast.proc.pid
    assert "already running" in said and f"pid {winner_pid}" in said, said
    winner.wait_for("daemon_took_over", jobs["top"], timeout=30)
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 1
    g = grower(cgroups, jobs["low"])
    assert wait_dead(g, timeout=30) == -signal.SIGKILL
    winner.wait_for("oom_resolved", jobs["top"], timeout=30)
    assert big.poll() is None  # the one OOM killed exactly one process
    assert winner.kinds().count("daemon_kill") == 1
    assert not any("daemon_kill" in text for _, text in loser.lines)
    assert oom_control(cgroups, jobs["top"])["oom_kill"] == 0
    assert winner.stop() == 0
    # the lock went with the winner: a new daemon on the same state dir starts
    again = Daemon(tmp_path, jobs["top"])
    daemons.append(again)
    again.wait_for("daemon_took_over", jobs["top"])
