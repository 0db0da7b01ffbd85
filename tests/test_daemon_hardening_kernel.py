"""Issue 21 (items 4-7) against the real v1 kernel: the one-daemon claim under a delay
injector, a dying victim killed once, a stopped daemon's memcg released by the
guardian, a user's flood that cannot erase another user's history."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.realkernel import TestCgroups, freezer_thaw, journaled, wait_until
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


def user_kills(state: Path) -> list[dict[str, Any]]:
    out = []
    for name in ("journal.jsonl.2", "journal.jsonl.1", "journal.jsonl"):
        path = state / name
        if path.exists():
            out += [json.loads(line) for line in path.read_text().splitlines() if line]
    return [r for r in out if r.get("kind") == "user_kill"]


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace for the delay")
@pytest.mark.parametrize("state_dirs", ["shared", "separate"])
def test_two_daemons_at_once_with_slow_xattr_writes_one_takes_over(
    cgroups: TestCgroups,
    jobs: dict[str, str],
    tmp_path: Path,
    daemons: list[Daemon],
    state_dirs: str,
) -> None:
    """Item 5: the claim is a lock the kernel arbitrates.  Two daemons started at once
    on the same memcg, one with every xattr write delayed 2 s: one runs, the other
    refuses (exit 1, naming it), and one OOM kills exactly one process.  Sharing a
    state directory the flocks decide; with separate ones, the claim's XATTR_CREATE."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    big = cgroups.hog(jobs["high"], mib=40)
    other = tmp_path if state_dirs == "shared" else tmp_path / "other"
    slow = TracedDaemon(tmp_path, cgroups.parent)
    fast = Daemon(other, cgroups.parent)
    daemons.extend([slow, fast])
    codes = {}
    for d in (slow, fast):
        with contextlib.suppress(subprocess.TimeoutExpired):
            codes[d] = d.proc.wait(timeout=8)
    assert len(codes) == 1, "exactly one daemon must refuse to start"
    ((loser, code),) = codes.items()
    winner = fast if loser is slow else slow
    said = "\n".join(text for _, text in loser.lines)
    assert code == 1, said
    winner_pid = slow.daemon_pid() if winner is slow else fast.proc.pid
    assert "already running" in said and f"pid {winner_pid}" in said, said
    winner.wait_for("daemon_took_over", jobs["top"], timeout=30)
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 1
    g = grower(cgroups, jobs["low"])
    assert wait_dead(g, timeout=30) == -signal.SIGKILL
    winner.wait_for("oom_resolved", jobs["top"], timeout=30)
    assert big.poll() is None  # the one OOM killed exactly one process
    assert winner.kinds().count("daemon_kill") == 1, "\n".join(t for _, t in winner.lines)
    assert not any("daemon_kill" in text for _, text in loser.lines)
    assert oom_control(cgroups, jobs["top"])["oom_kill"] == 0
    assert winner.stop() == 0
    # the lock went with the winner: a new daemon on the same state dir starts
    again = Daemon(other, jobs["top"])
    daemons.append(again)
    again.wait_for("daemon_took_over", jobs["top"])


FREEZER = Path("/sys/fs/cgroup/freezer")


def run_cli(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memcgctl", "--state-dir", str(state), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@pytest.mark.skipif(
    not FREEZER.is_dir(), reason="needs the v1 freezer hierarchy to hold a victim in the kernel"
)
def test_a_victim_stuck_in_the_kernel_is_killed_and_counted_once(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Item 6: the policy's victim sits in a frozen v1 freezer cgroup, where SIGKILL
    cannot make it exit.  The daemon kills it once: its memory comes back at once
    (process_mrelease), it is never chosen, signalled or journaled again — not in the
    same episode, not in a later one — and the next victim follows after the grace."""
    freezer = TestCgroups(FREEZER, name=cgroups.name)
    try:
        fz = freezer.make("stuck", limit=None)
        set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
        victim = cgroups.hog(jobs["low"], mib=40)  # badness 100: the policy's victim
        TestCgroups.write(freezer.path(fz), "cgroup.procs", str(victim.pid))
        TestCgroups.write(freezer.path(fz), "freezer.state", "FROZEN")
        wait_until(
            lambda: (freezer.path(fz) / "freezer.state").read_text().strip() == "FROZEN",
            "the victim frozen",
        )
        d = Daemon(tmp_path, cgroups.parent, "--grace", "300ms")
        daemons.append(d)
        d.wait_for("daemon_took_over", jobs["top"])
        first = grower(cgroups, jobs["high"])  # badness 900
        journaled(tmp_path, "user_kill", victim.pid)
        # SIGKILL sent, but the victim cannot exit: it is stuck in the kernel...
        assert victim.poll() is None
        assert Path(f"/proc/{victim.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "DS"
        # ...and its memory was given back all the same (process_mrelease)
        wait_until(lambda: status_kb(victim.pid, "RssAnon") < 8 << 10, "the victim reaped")
        assert wait_dead(first, timeout=30) == -signal.SIGKILL  # the next victim
        d.wait_for("oom_resolved", jobs["top"], timeout=30)
        second = grower(cgroups, jobs["high"])  # a new episode, the victim still stuck
        assert wait_dead(second, timeout=30) == -signal.SIGKILL
        assert victim.poll() is None
        kills = [r for r in user_kills(tmp_path) if r["pid"] == victim.pid]
        assert len(kills) == 1, kills
        assert {r["pid"] for r in user_kills(tmp_path)} == {victim.pid, first.pid, second.pid}
        lines = [t for _, t in d.lines if "daemon_kill" in t]
        assert sum(f"pid={victim.pid} " in t for t in lines) == 1, lines
        TestCgroups.write(freezer.path(fz), "freezer.state", "THAWED")
        assert victim.wait(timeout=15) == -signal.SIGKILL  # the one signal, delivered
        r = run_cli(tmp_path, "counters", "--json", jobs["low"])
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        low = next(c for c in doc["cgroups"] if c["cgroup"] == jobs["low"])
        assert low["by_cause"]["user"] == 1, low
        assert oom_control(cgroups, jobs["top"])["oom_kill"] == 0
    finally:
        freezer_thaw(cgroups.path(cgroups.parent))
        freezer.cleanup()


NOBODY = 65534
SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody (the project's may live in /root)

# As nobody: give its own cgroups delay 0 and an 8 MiB limit, and OOM them in a loop
# (a long name makes every record bigger), each once the daemon has taken it over.
_FLOOD_AS_NOBODY = r"""
import os, subprocess, sys, time
top, n = sys.argv[1], int(sys.argv[2])
base = os.path.join(top, "x" * 200)
os.mkdir(base)
grow = "b = []\nwhile True:\n    b.append(b'x' * (1 << 20))\n"
for i in range(n):
    d = os.path.join(base, f"f{i}")
    os.mkdir(d)
    with open(os.path.join(d, "memory.limit_in_bytes"), "w") as f:
        f.write(str(8 << 20))
    os.setxattr(d, "user.memcgctl.oom_delay_ms", b"0")
    deadline = time.monotonic() + 20
    while "oom_kill_disable 1" not in open(os.path.join(d, "memory.oom_control")).read():
        if time.monotonic() > deadline:
            sys.exit(f"the daemon did not take {d} over")
        time.sleep(0.05)
    join = f'echo $$ > "{d}/cgroup.procs" && exec "$0" -c "$1"'
    p = subprocess.Popen(["/bin/sh", "-c", join, sys.executable, grow])
    print(p.wait(timeout=60), flush=True)
"""


@pytest.mark.skipif(
    shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs setpriv and /usr/bin/python3 to run the attacker as nobody",
)
def test_a_users_oom_flood_cannot_erase_roots_history(
    cgroups: TestCgroups,
    jobs: dict[str, str],
    tmp_path: Path,
    daemons: list[Daemon],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Item 4: root's kill is journaled; then nobody OOMs its own delegated cgroups in a
    loop with a daemon running (each a real OOM, a real kill, five records with a long
    path).  The journal rotates many times, stays bounded, and root's record is still
    in ``events``: the flood evicted only nobody's own oldest records."""
    monkeypatch.setenv("MEMCGCTL_JOURNAL_MAX_BYTES", "4K")
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    deleg = cgroups.make("deleg", limit=64 << 20)
    d = cgroups.path(deleg)
    for f in [d, d / "cgroup.procs", d / "tasks"]:
        os.chown(f, NOBODY, NOBODY)
    daemon = Daemon(tmp_path, cgroups.parent)
    daemons.append(daemon)
    daemon.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, jobs["low"])
    assert wait_dead(g) == -signal.SIGKILL
    journaled(tmp_path, "user_kill", g.pid)
    rounds = 14
    r = subprocess.run(
        [*SETPRIV, SYSTEM_PYTHON, "-c", _FLOOD_AS_NOBODY, str(d), str(rounds)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(-signal.SIGKILL)] * rounds  # every one a real OOM kill
    wait_until(
        lambda: sum(f"/f{rounds - 1}" in t for _, t in daemon.lines if "oom_resolved" in t),
        "the last flood episode over",
    )
    assert daemon.stop() == 0
    nobody = [k for k in user_kills(tmp_path) if "x" * 200 in str(k["cgroup"])]
    assert (tmp_path / "journal.jsonl.2").exists()  # rotated again and again...
    assert len(nobody) < rounds  # ...and nobody's oldest records were evicted
    total = sum((tmp_path / n).stat().st_size for n in os.listdir(tmp_path) if "jsonl" in n)
    assert total <= 3 * 4096 + 4096, total  # bounded
    ev = run_cli(tmp_path, "--cgroup-root", str(cgroups.mount), "events", "--json")
    assert ev.returncode == 0, ev.stderr
    events = json.loads(ev.stdout)["events"]
    assert "user_kill" in [e["kind"] for e in events if e.get("pid") == g.pid], events[-3:]


def kernel_kills(cgroups: TestCgroups, jobs: dict[str, str]) -> int:
    return sum(oom_control(cgroups, cg)["oom_kill"] for cg in jobs.values())


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_stopped_daemon_never_leaves_a_memcg_paused(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Item 7: SIGSTOP the daemon mid-OOM (delay 2 s).  The guardian sees it stopped,
    restores oom_kill_disable within the delay + 3 s of the OOM, and the kernel
    resolves the OOM.  After SIGCONT the daemon takes the memcg over afresh and kills
    nothing for the OOM that is over; the next OOM is its own again."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "2000")
    big = cgroups.hog(jobs["high"], mib=16)
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, jobs["low"])
    t_oom, _ = d.wait_for("under_oom", jobs["top"])
    os.kill(d.proc.pid, signal.SIGSTOP)
    try:
        assert wait_dead(g, timeout=30) == -signal.SIGKILL  # the kernel's kill
        t_dead = time.monotonic()
        assert proc_state(d.proc.pid) == "T"  # still stopped: not the daemon's kill
        _, line = d.wait_for("guardian:", None)
        assert "stopped" in line and "oom_kill_disable=0" in line, line
        assert kernel_kills(cgroups, jobs) == 1
        assert t_dead - t_oom <= 2.0 + 3.0, t_dead - t_oom  # paused at most delay + 3 s
    finally:
        os.kill(d.proc.pid, signal.SIGCONT)
    wait_until(lambda: d.kinds().count("daemon_took_over") == 2, "the daemon back in charge")
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 1
    assert "daemon_kill" not in d.kinds()  # the OOM that is over: no second kill
    assert big.poll() is None
    g2 = grower(cgroups, jobs["low"])  # the next OOM: the daemon's policy again
    assert wait_dead(g2, timeout=30) == -signal.SIGKILL
    _, line = d.wait_for("daemon_kill", jobs["top"])
    assert f"pid={g2.pid}" in line and big.poll() is None
    assert kernel_kills(cgroups, jobs) == 1
    assert d.stop() == 0
