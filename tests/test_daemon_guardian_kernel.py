"""``--guardian``, against the real v1 kernel: under a systemd watchdog (this test plays
systemd: a notify socket, $WATCHDOG_USEC) the daemon starts no guardian process and a
SIGKILL leaves its marks for ExecStopPost's ``--release``; ``--guardian=systemd`` without
that watchdog starts a guardian process after all, which releases at once."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.realkernel import TestCgroups, wait_until
from tests.test_daemon_kernel import MARK, Daemon, grower, oom_control, run_cli, set_xattr


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    s.bind(path)
    s.settimeout(20)
    yield s, path
    s.close()


def guardians_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` and that run a guardian."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            ppid = int((d / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
            cmdline = (d / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"guard" in cmdline:
            out.append(int(d.name))
    return out


def test_under_systemds_watchdog_no_guardian_process(
    cgroups: TestCgroups,
    tmp_path: Path,
    notify_socket: tuple[socket.socket, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sock, path = notify_socket
    top = cgroups.make("jobs", limit=96 << 20)
    low = cgroups.make("jobs/low", limit=None)
    set_xattr(cgroups, top, "oom_delay_ms", "60000")
    monkeypatch.setenv("NOTIFY_SOCKET", path)  # the daemon inherits what systemd sets
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    d = Daemon(tmp_path / "state", cgroups.parent, "--guardian=systemd")
    try:
        messages = [sock.recv(4096).decode() for _ in range(2)]  # READY=1, then WATCHDOG=1
        assert messages[0].startswith("READY=1") and "WATCHDOG=1" in messages[1]
        d.wait_for("daemon_took_over", top)
        assert not any("--guardian=systemd without" in line for _, line in d.lines)
        assert guardians_of(d.proc.pid) == []
        g = grower(cgroups, low)
        d.wait_for("under_oom", top)
        d.stop(signal.SIGKILL)
        time.sleep(1.0)  # a guardian would have released by now; there is none
        assert oom_control(cgroups, top)["oom_kill_disable"] == 1 and g.poll() is None
        # systemd's ExecStopPost= is what releases
        r = run_cli(tmp_path / "state", "daemon", "--release", "--root", cgroups.parent)
        assert r.returncode == 0, r.stderr
        assert f"{top}: restored oom_kill_disable" in r.stdout
        assert g.wait(timeout=15) == -signal.SIGKILL  # the kernel decides again
        assert MARK not in os.listxattr(cgroups.path(top))
    finally:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)


def test_systemd_mode_without_a_watchdog_starts_the_guardian_process(
    cgroups: TestCgroups, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)
    top = cgroups.make("jobs", limit=96 << 20)
    low = cgroups.make("jobs/low", limit=None)
    set_xattr(cgroups, top, "oom_delay_ms", "60000")
    d = Daemon(tmp_path / "state", cgroups.parent, "--guardian=systemd")
    try:
        _, line = d.wait_for("--guardian=systemd", None)
        assert "starting a guardian process" in line
        d.wait_for("daemon_took_over", top)
        wait_until(lambda: guardians_of(d.proc.pid) != [], "the guardian process")
        g = grower(cgroups, low)
        d.wait_for("under_oom", top)
        d.stop(signal.SIGKILL)
        assert g.wait(timeout=15) == -signal.SIGKILL  # released by the guardian at once
        _, line = d.wait_for("guardian:", None)
        assert top in line and "oom_kill_disable=0" in line
    finally:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL)
