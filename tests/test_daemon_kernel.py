"""The daemon against the real v1 kernel: OOM delay, priority victim, escalation, crash
recovery.  The daemon always runs with --root set to our own test parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realkernel import HELPERS, TestCgroups, journaled, wait_until

REPO = Path(__file__).resolve().parent.parent
MARK = "trusted.memcgctl.daemon"
CLAIM = "trusted.memcgctl.daemon_root"


class Daemon:
    """`memcgctl daemon` as a subprocess; its stderr lines collected by a thread."""

    def __init__(
        self,
        state: Path,
        root: str,
        *extra: str,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),  # a command that execs it: prlimit … --
    ) -> None:
        self.proc = subprocess.Popen(
            [
                *prefix,
                sys.executable,
                "-m",
                "memcgctl",
                "--state-dir",
                str(state),
                "daemon",
                "--root",
                root,
                "--rescan",
                "200ms",
                *extra,
            ],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[tuple[float, str]] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # the guardian's lines too (it shares stderr)
            with self._cv:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cv.notify_all()

    def wait_for(
        self, kind: str, cgroup: str | None = None, timeout: float = 15.0
    ) -> tuple[float, str]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for t, line in self.lines:
                    head = line.split(" ", 2)
                    if (head[0].endswith(">" + kind) or head[0] == kind) and (
                        cgroup is None or head[1] == f"cgroup={cgroup}"
                    ):
                        return t, line
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no {kind} event; daemon said:\n"
                        + "\n".join(text for _, text in self.lines)
                    )
                self._cv.wait(left)

    def kinds(self) -> list[str]:
        with self._cv:
            return [line.split(" ", 1)[0].split(">", 1)[1] for _, line in self.lines]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=15)


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.proc.poll() is None:
            d.stop()


def oom_control(tc: TestCgroups, cg: str) -> dict[str, int]:
    text = (tc.path(cg) / "memory.oom_control").read_text()
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


def set_xattr(tc: TestCgroups, cg: str, name: str, value: str) -> None:
    os.setxattr(tc.path(cg), f"trusted.memcgctl.{name}", value.encode())


def grower(tc: TestCgroups, cg: str, upto_mib: int = 512) -> subprocess.Popen[bytes]:
    return tc.spawn(cg, [sys.executable, str(HELPERS / "grow.py"), "4096", str(upto_mib)])


def wait_dead(p: subprocess.Popen[bytes] | subprocess.Popen[str], timeout: float = 15.0) -> int:
    return p.wait(timeout=timeout)


@pytest.fixture
def jobs(cgroups: TestCgroups) -> dict[str, str]:
    """/jobs (96 MiB, managed) with low (badness 100) and high (badness 900)."""
    top = cgroups.make("jobs", limit=96 << 20)
    low = cgroups.make("jobs/low", limit=None)
    high = cgroups.make("jobs/high", limit=None)
    set_xattr(cgroups, low, "badness", "100")
    set_xattr(cgroups, high, "badness", "900")
    return {"top": top, "low": low, "high": high}


def test_priority_victim_instead_of_the_kernels_choice(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    big = cgroups.hog(jobs["high"], mib=56)  # the kernel would kill this one
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 1
    mark = json.loads(os.getxattr(cgroups.path(jobs["top"]), MARK))
    assert mark["oom_kill_disable"] == 0 and mark["instance"].split("/")[1] == str(d.proc.pid)
    g = grower(cgroups, jobs["low"])
    assert wait_dead(g) == -signal.SIGKILL
    _, line = d.wait_for("daemon_kill", jobs["top"])
    assert f"pid={g.pid}" in line
    assert big.poll() is None  # the biggest process survives
    # the kernel killed nobody in our memcgs
    for cg in jobs.values():
        assert oom_control(cgroups, cg)["oom_kill"] == 0
    d.wait_for("oom_resolved", jobs["top"])
    assert journaled(tmp_path, "user_kill", g.pid)["by"] == "daemon"
    # SIGTERM restores what the daemon changed
    assert d.stop() == 0
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 0
    assert MARK not in os.listxattr(cgroups.path(jobs["top"]))


def test_kernel_policy_kills_the_kernels_choice(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """--policy kernel (its selection imported only then) kills what the kernel would."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    big = cgroups.hog(jobs["high"], mib=60)  # the kernel's choice, badness 900 or not
    d = Daemon(tmp_path, cgroups.parent, "--policy", "kernel", "--no-guardian")
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, jobs["low"], upto_mib=40)
    _, line = d.wait_for("daemon_kill", jobs["top"])
    assert f"pid={big.pid}" in line
    assert wait_dead(big) == -signal.SIGKILL
    assert g.poll() is None  # the priority victim lives
    for cg in jobs.values():
        assert oom_control(cgroups, cg)["oom_kill"] == 0


def test_raising_the_limit_within_the_delay_saves_everyone(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "2000")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, jobs["low"], upto_mib=120)  # needs more than 96 MiB, then stops
    d.wait_for("under_oom", jobs["top"])
    assert g.poll() is None
    cgroups.set_limit(jobs["top"], 200 << 20)  # the job manager reacts in time
    _, line = d.wait_for("oom_resolved", jobs["top"])
    assert "by=userspace" in line
    assert g.stdout is not None and g.stdout.readline() == b"survived\n"
    assert "daemon_kill" not in d.kinds()


def test_the_delay_expires_then_the_priority_victim_dies(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "2000")
    big = cgroups.hog(jobs["high"], mib=40)
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, jobs["low"])
    t_oom, _ = d.wait_for("under_oom", jobs["top"])
    t_kill, line = d.wait_for("daemon_kill", jobs["top"])
    assert 1.8 <= t_kill - t_oom <= 3.5, t_kill - t_oom
    assert f"pid={g.pid}" in line
    assert wait_dead(g) == -signal.SIGKILL
    assert big.poll() is None


def test_livelock_escalates_to_kill_all(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Killing the lowest-priority process frees too little: the OOM persists, so the
    daemon escalates to kill-all of the lowest-priority child left."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    mid = cgroups.make("jobs/mid", limit=None)
    set_xattr(cgroups, mid, "badness", "500")
    tiny = cgroups.sleeper(jobs["low"])
    big = cgroups.hog(jobs["high"], mib=24)
    d = Daemon(tmp_path, cgroups.parent, "--max-rounds", "1", "--grace", "300ms")
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, mid)
    assert wait_dead(g) == -signal.SIGKILL
    assert tiny.wait(timeout=10) == -signal.SIGKILL
    _, line = d.wait_for("daemon_escalated", jobs["top"])
    assert f"target={mid}" in line
    assert big.poll() is None


def crash_during_oom(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> subprocess.Popen[bytes]:
    """A daemon with a 60 s delay and no guardian (as under systemd) pauses an OOM in
    /jobs, then dies by SIGKILL.  Returns the grower, asleep in the paused OOM."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "60000")
    d = Daemon(tmp_path, cgroups.parent, "--no-guardian")
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, jobs["low"])
    d.wait_for("under_oom", jobs["top"])
    d.stop(signal.SIGKILL)
    return g


def test_sigkilled_daemon_leaves_a_hung_memcg_that_a_restart_resolves(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    g = crash_during_oom(cgroups, jobs, tmp_path, daemons)  # returns once the daemon is reaped
    # hung: paused by the dead daemon's oom_kill_disable
    ctl = oom_control(cgroups, jobs["top"])
    assert (ctl["oom_kill_disable"], ctl["under_oom"]) == (1, 1) and g.poll() is None
    d2 = Daemon(tmp_path, cgroups.parent)
    daemons.append(d2)
    _, line = d2.wait_for("under_oom", jobs["top"])
    assert "adopted=True" in line
    assert wait_dead(g, timeout=5) == -signal.SIGKILL  # no 60 s wait after a restart
    assert d2.stop() == 0
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 0


def test_release_after_a_crash_hands_the_oom_back_to_the_kernel(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    g = crash_during_oom(cgroups, jobs, tmp_path, daemons)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "memcgctl",
            "--state-dir",
            str(tmp_path),
            "daemon",
            "--root",
            cgroups.parent,
            "--release",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert f"{jobs['top']}: restored oom_kill_disable" in r.stdout
    assert wait_dead(g) == -signal.SIGKILL  # now the kernel's OOM killer acts
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 0
    # v1 counts the kill on the victim's own memcg
    assert oom_control(cgroups, jobs["low"])["oom_kill"] == 1
    assert MARK not in os.listxattr(cgroups.path(jobs["top"]))


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memcgctl", "--state-dir", str(tmp_path), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_guardian_releases_a_sigkilled_daemons_memcg(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Without systemd, SIGKILL must not leave the memcg paused (issue 12 #8)."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "60000")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, jobs["low"])
    d.wait_for("under_oom", jobs["top"])
    d.stop(signal.SIGKILL)
    assert wait_dead(g) == -signal.SIGKILL  # the kernel decides again, at once
    _, line = d.wait_for("guardian:", None)
    assert jobs["top"] in line and "oom_kill_disable=0" in line
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 0
    assert MARK not in os.listxattr(cgroups.path(jobs["top"]))
    assert CLAIM not in os.listxattr(cgroups.path(cgroups.parent))


def test_a_held_journal_lock_never_delays_a_kill(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A kill never waits on the journal.  A process holds the journal lock
    through the whole OOM; the daemon kills at once and journals once it is free."""
    from memcgctl.daemon.journaling import JournalWriter
    from memcgctl.state.journal import Journal

    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    holder = subprocess.Popen(
        ["flock", "-x", str(tmp_path / Journal.LOCK), "-c", "echo held; exec sleep 30"],
        stdout=subprocess.PIPE,
        start_new_session=True,  # flock's child holds the lock too: kill the group
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        g = grower(cgroups, jobs["low"])
        t0 = time.monotonic()
        assert wait_dead(g) == -signal.SIGKILL
        _, line = d.wait_for("daemon_kill", jobs["top"])
        # a kill that waited for the journal would wait at least the writer's lock
        # timeout (it waited for the holder, 19 s, before issue 12); under load the
        # daemon itself may take a while, so the bound is that timeout, not less
        waited = int(line.split("waited_ms=")[1].split()[0])
        assert waited < JournalWriter.TIMEOUT * 1000, line
        assert time.monotonic() - t0 < 10
        d.wait_for("journal_failed", None, timeout=15)  # said once, records kept
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    journaled(tmp_path, "user_kill", g.pid)  # journaled once the lock was freed
    assert d.stop() == 0


def test_one_daemon_per_subtree(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A second daemon on an overlapping subtree refuses; --release (also --dry-run)
    leaves a running daemon's marks alone (issue 12 #5, #8)."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "1000")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    for root in (cgroups.parent, jobs["top"]):
        r = run_cli(tmp_path / "other", "daemon", "--root", root, "--no-mlock")
        assert r.returncode == 1, r.stderr
        assert f"pid {d.proc.pid}" in r.stderr and len(r.stderr.splitlines()) == 1
    for extra in ((), ("--dry-run",)):
        r = run_cli(tmp_path, "daemon", "--root", cgroups.parent, "--release", *extra)
        said = (  # issue 24: a dry run always says something
            f"{cgroups.parent}: would release nothing (no marks or claims of stopped daemons)\n"
            if extra
            else ""
        )
        assert r.returncode == 0 and r.stdout == said, r.stdout + r.stderr
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 1
    assert MARK in os.listxattr(cgroups.path(jobs["top"]))
    assert d.stop() == 0
    d2 = Daemon(tmp_path, jobs["top"])  # the claim went with the first daemon
    daemons.append(d2)
    d2.wait_for("daemon_took_over", jobs["top"])


def test_release_dry_run_changes_nothing(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    g = crash_during_oom(cgroups, jobs, tmp_path, daemons)
    r = run_cli(tmp_path, "daemon", "--root", cgroups.parent, "--release", "--dry-run")
    assert r.returncode == 0, r.stderr
    first, *claims = r.stdout.splitlines()
    assert first == f"{jobs['top']}: would restore oom_kill_disable"
    assert all("would remove the claim of stopped daemon pid" in c for c in claims), claims
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 1
    assert MARK in os.listxattr(cgroups.path(jobs["top"])) and g.poll() is None
    r = run_cli(tmp_path, "daemon", "--root", cgroups.parent, "--release")
    assert r.stdout == f"{jobs['top']}: restored oom_kill_disable=0\n"
    assert wait_dead(g) == -signal.SIGKILL


def test_oom_after_oom_each_takes_one_victim(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Five growers one after another beside an innocent process: each OOM is a new
    episode at round 1 — never a livelock escalation (issue 12 #6)."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    innocent = cgroups.hog(jobs["high"], mib=8)
    d = Daemon(tmp_path, cgroups.parent, "--max-rounds", "1", "--grace", "2s")
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    for _ in range(5):
        g = grower(cgroups, jobs["low"])
        assert wait_dead(g) == -signal.SIGKILL
    assert innocent.poll() is None
    # the log line follows the kill: wait for it rather than read once
    wait_until(lambda: d.kinds().count("daemon_kill") == 5, "five daemon_kill lines")
    assert "daemon_escalated" not in d.kinds(), "\n".join(t for _, t in d.lines)


def test_a_cgroup_name_cannot_forge_log_fields(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A delegated user names a cgroup ``x delay_ms=0 mode=valve``: one field still."""
    import shlex

    cg = cgroups.make("x delay_ms=0 mode=valve", limit=64 << 20)
    set_xattr(cgroups, cg, "oom_delay_ms", "1000")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    _, line = d.wait_for("daemon_took_over")
    fields = dict(t.split("=", 1) for t in shlex.split(line)[1:])
    assert fields == {"cgroup": cg, "delay_ms": "1000", "mode": "oom"}, line


def test_shadow_mode_compares_the_kernels_victim_with_the_policys(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """--dry-run on a real OOM: the kernel kills the biggest; the daemon reports whom
    the policy would have killed instead, and a summary when it stops."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    small = cgroups.hog(jobs["low"], mib=8)
    d = Daemon(tmp_path, cgroups.parent, "--dry-run")
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    g = grower(cgroups, jobs["high"])
    assert wait_dead(g) == -signal.SIGKILL  # the kernel's own pick
    _, would = d.wait_for("would_kill", jobs["top"])
    _, kernel = d.wait_for("kernel_kill", jobs["top"])
    assert f"pid={small.pid}" in would
    assert f"pid={g.pid}" in kernel and "agree=False" in kernel
    assert small.poll() is None
    assert d.stop() == 0
    _, line = d.wait_for("daemon_stopped", cgroups.parent)
    assert "kernel_kills=1" in line and "agreed=0" in line
    # issue 21 item 12: the summary is in the journal too, not only on stderr
    (stopped,) = daemon_records(tmp_path, "daemon_stopped")
    assert (stopped["cgroup"], stopped["kernel_kills"], stopped["agreed"]) == (
        cgroups.parent,
        1,
        0,
    )


def daemon_records(state: Path, kind: str) -> list[dict[str, object]]:
    """The journal's ``kind`` records, as the journal holds them once the daemon ended."""
    path = state / "journal.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, lines) if r.get("kind") == kind]


def test_sigterm_journals_daemon_stopped(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A daemon stopped with SIGTERM journals ``daemon_stopped`` (after restoring what
    it held), the same instance as its ``daemon_started``."""
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "500")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 1
    assert d.stop(signal.SIGTERM) == 0
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 0
    (started,) = daemon_records(tmp_path, "daemon_started")
    (stopped,) = daemon_records(tmp_path, "daemon_stopped")
    assert stopped["cgroup"] == started["cgroup"] == cgroups.parent
    assert stopped["by"] == "daemon" and stopped["kernel_kills"] == 0
    assert "agreed" not in stopped  # only shadow mode compares
    kinds = [
        r["kind"] for r in map(json.loads, (tmp_path / "journal.jsonl").read_text().splitlines())
    ]
    assert kinds[-1] == "daemon_stopped"


def test_dry_run_changes_nothing_and_kills_nothing(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "0")
    d = Daemon(tmp_path, cgroups.parent, "--dry-run")
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    assert oom_control(cgroups, jobs["top"])["oom_kill_disable"] == 0
    assert MARK not in os.listxattr(cgroups.path(jobs["top"]))
    assert d.stop() == 0


def test_psi_trigger_wakes_only_on_pressure(unified_cgroups: TestCgroups) -> None:
    """The daemon's v2/host trigger, on the real kernel (the unified hierarchy here has
    PSI without the memory controller): poll() always reports POLLIN on a trigger fd, so
    the daemon must wait for POLLPRI alone, which stays quiet while nothing stalls."""
    import select

    from memcgctl.daemon.ports import psi_params
    from memcgctl.kernel.notify import PsiTrigger
    from memcgctl.kernel.procfs import ProcFs

    cg = unified_cgroups.make("idle", limit=None)
    # root here lacks CAP_SYS_RESOURCE: the daemon rounds the window as the kernel wants
    stall, window = psi_params(150_000, 1_000_000, ProcFs(Path("/proc")).has_capability(24))
    trig = PsiTrigger(str(unified_cgroups.path(cg) / "memory.pressure"), stall, window)
    try:
        everything = select.poll()
        everything.register(trig.fileno(), select.POLLIN | select.POLLPRI)
        assert everything.poll(0), "the kernel reports POLLIN on a PSI trigger at once"
        pri = select.poll()
        pri.register(trig.fileno(), select.POLLPRI)
        assert pri.poll(300) == []
    finally:
        trig.close()
