"""Issue 21 #7, the parts that need no cgroup: sd_notify over a real AF_UNIX datagram
socket (a path and an abstract name), the watchdog interval, and the guardian's look
at a real process (running, stopped, hung, gone)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memcgctl.daemon import guardian
from memcgctl.daemon.sdnotify import Notifier, notify, watchdog_interval
from memcgctl.kernel.procfs import ProcFs


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if request.param == "path":
        name = str(tmp_path / "notify")
        s.bind(name)
    else:
        name = f"@memcgctl-test-{os.getpid()}-{time.monotonic_ns()}"
        s.bind("\0" + name[1:])
    s.settimeout(5)
    yield s, name
    s.close()


def test_notify_reaches_the_socket(listener: tuple[socket.socket, str]) -> None:
    s, name = listener
    assert notify("READY=1\nSTATUS=enforcing", {"NOTIFY_SOCKET": name})
    assert s.recv(4096) == b"READY=1\nSTATUS=enforcing"


def test_a_full_socket_never_blocks_the_daemon(listener: tuple[socket.socket, str]) -> None:
    """Nobody reads the socket (systemd stuck, or a bench that plays it and never reads):
    once its queue is full (net.unix.max_dgram_qlen datagrams), a notification is
    dropped (False), not waited for; blocked in sendto, the daemon stopped enforcing
    and did not even hear SIGTERM."""
    s, name = listener
    sent: list[bool] = []

    def send_many() -> None:
        sent.extend(notify(f"WATCHDOG=1\nSTATUS={i}", {"NOTIFY_SOCKET": name}) for i in range(64))

    t = threading.Thread(target=send_many, daemon=True)  # (closing s wakes a blocked one)
    t.start()
    t.join(10)
    assert not t.is_alive(), "notify() blocked on the full socket"
    assert sent[0] and not sent[-1], sent
    assert s.recv(4096) == b"WATCHDOG=1\nSTATUS=0"  # what was queued is intact


def test_without_a_socket_nothing_is_sent() -> None:
    assert not notify("READY=1", {})
    assert not notify("READY=1", {"NOTIFY_SOCKET": "relative/path"})
    assert not notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify"})


def test_watchdog_interval_for_us_only() -> None:
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "4000000"}) == 4.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": me}) == 4.0
    assert watchdog_interval({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "x"}) is None
    assert watchdog_interval({}) is None


def test_notifier_pings_at_half_the_interval(listener: tuple[socket.socket, str]) -> None:
    s, name = listener
    n = Notifier({"NOTIFY_SOCKET": name, "WATCHDOG_USEC": "2000000"})
    assert n.every == 1.0
    assert n.ready()
    assert s.recv(4096) == b"READY=1"
    assert n.beat(10.0) == 11.0
    assert s.recv(4096) == b"WATCHDOG=1"
    assert n.beat(10.5) == 11.0  # not due: nothing sent
    assert n.beat(11.0) == 12.0
    assert s.recv(4096) == b"WATCHDOG=1"
    s.settimeout(0.05)
    with pytest.raises(TimeoutError):
        s.recv(4096)  # exactly two pings
    assert n.stopping()


def test_the_guardian_tells_running_stopped_hung_and_gone(tmp_path: Path) -> None:
    p = subprocess.Popen(["sleep", "60"])
    try:
        start = ProcFs(Path("/proc")).start_time(p.pid)
        hb = guardian.Heartbeat(str(tmp_path), p.pid)  # as if it were the daemon's
        assert os.stat(hb.path).st_mtime == 0  # starting: not judged by its heartbeat
        assert guardian.look("/proc", p.pid, start, hb.path) == guardian.RUNNING
        hb.beat(0.0)
        assert guardian.look("/proc", p.pid, start, hb.path) == guardian.RUNNING
        assert guardian.look("/proc", p.pid, start + 1, hb.path) == guardian.DIED  # pid reuse
        os.kill(p.pid, signal.SIGSTOP)
        time.sleep(0.05)
        assert guardian.look("/proc", p.pid, start, hb.path) == guardian.STOPPED
        fd = os.pidfd_open(p.pid)
        try:
            assert guardian.watch("/proc", p.pid, start, hb.path, fd) == guardian.STOPPED
            os.kill(p.pid, signal.SIGCONT)
            old = time.time() - guardian.STALE_S - 1
            os.utime(hb.path, (old, old))
            assert guardian.look("/proc", p.pid, start, hb.path) == guardian.HUNG
            assert guardian.watch("/proc", p.pid, start, hb.path, fd) == guardian.HUNG
            hb.beat(1.0)
            assert guardian.wait_back("/proc", p.pid, start, hb.path, fd) == guardian.RUNNING
            assert not hb.released()
            Path(guardian.released_path(str(tmp_path), p.pid)).touch()
            assert hb.released() and not hb.released()  # once
            p.kill()
            p.wait()
            assert guardian.watch("/proc", p.pid, start, hb.path, fd) == guardian.DIED
        finally:
            os.close(fd)
        hb.close()
        assert not Path(hb.path).exists()
    finally:
        p.kill()
        p.wait()


def test_the_guardian_module_stays_light() -> None:
    import ast

    tree = ast.parse(Path(guardian.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    # (memcgctl: the release machinery, imported inside the function that acts;
    # tests/test_daemon_footprint.py checks that an idle guardian process has none of it)
    allowed = {"__future__", "os", "select", "sys", "time", "contextlib", "collections"}
    assert imported <= allowed | {"memcgctl"}, imported


class FakeCore:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def rescan(self, now: float, starting: bool = False) -> None:
        self.calls.append(f"rescan starting={starting}")

    def release_watches(self, why: str) -> None:
        self.calls.append(f"release_watches {why}")


def test_liveness_takes_over_afresh_after_the_guardians_release(
    tmp_path: Path, listener: tuple[socket.socket, str]
) -> None:
    from memcgctl.daemon.watchdog import RELEASED_BY_GUARDIAN, Liveness

    s, name = listener
    core = FakeCore()
    hb = guardian.Heartbeat(str(tmp_path), os.getpid())
    live = Liveness(core, lambda: 100.0, Notifier({"NOTIFY_SOCKET": name}), hb)
    assert live.due() is None  # not beaten yet
    assert live() is False and core.calls == []
    assert live.due() == 100.0 + guardian.BEAT_S  # the heartbeat's next beat
    assert s.recv(4096) == b"READY=1\nSTATUS=enforcing"
    Path(guardian.released_path(str(tmp_path), os.getpid())).touch()
    assert live() is False
    assert core.calls == [f"release_watches {RELEASED_BY_GUARDIAN}", "rescan starting=True"]
    live.close()
    assert s.recv(4096) == b"STOPPING=1"
    assert not Path(hb.path).exists()
