"""Issue 22, idle CPU: the guardian sleeps until the daemon's heartbeat could first be
stale, and the daemon beats on the wake-ups its loop has anyway.

The guardian is driven against a real process and a real heartbeat file, on a fake wall
clock: its poller is replaced by one that records each timeout asked for and moves the
clock on by it (scripted events happen "during" a sleep), so the schedule it keeps is
exact and the test takes no time.  The loop runs for real with a short BEAT_S."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from memcgctl.daemon import guardian
from memcgctl.daemon.loop import Loop
from memcgctl.daemon.sdnotify import Notifier
from memcgctl.daemon.watchdog import Liveness
from memcgctl.kernel.procfs import ProcFs
from tests.test_daemon_loop_unit import FakeCore, FakePorts, make, run_for

T0 = 1_700_000_000.0  # the fake wall clock's start


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def time(self) -> float:
        return self.now


class FakePoller:
    """select.poll() for the guardian: poll(ms) moves the clock by ms and runs what was
    scripted to happen meanwhile; readable (the daemon died) when a script says so."""

    def __init__(self, clock: FakeClock, script: Callable[[float, float], bool]) -> None:
        self.clock = clock
        self.script = script
        self.sleeps: list[float] = []
        self.registered: list[int] = []

    def register(self, fd: int, mask: int) -> None:
        self.registered.append(fd)

    def poll(self, timeout_ms: int) -> list[tuple[int, int]]:
        start, end = self.clock.now, self.clock.now + timeout_ms / 1000
        self.sleeps.append(timeout_ms / 1000)
        self.clock.now = end
        died = self.script(start, end)
        return [(self.registered[0], select.POLLIN)] if died else []


@pytest.fixture
def sleeper() -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    p = subprocess.Popen(["sleep", "120"])
    try:
        yield p, ProcFs(Path("/proc")).start_time(p.pid)
    finally:
        p.kill()
        p.wait()


def fake_world(
    monkeypatch: pytest.MonkeyPatch, script: Callable[[float, float], bool]
) -> tuple[FakeClock, list[FakePoller]]:
    clock = FakeClock()
    pollers: list[FakePoller] = []

    def poll() -> FakePoller:
        pollers.append(FakePoller(clock, script))
        return pollers[-1]

    monkeypatch.setattr(guardian, "time", clock)
    monkeypatch.setattr(select, "poll", poll)
    return clock, pollers


def touch(path: str, at: float) -> None:
    os.utime(path, (at, at))


def beats_until(path: str, every: float, last: float) -> Callable[[float, float], bool]:
    """A daemon beating every ``every`` seconds from T0 until T0 + last, then silent."""

    def script(start: float, end: float) -> bool:
        t = T0
        newest = None
        while t <= min(end, T0 + last):
            newest = t
            t += every
        if newest is not None:
            touch(path, newest)
        return False

    return script


def watched(sleeper: tuple[subprocess.Popen[bytes], int], hb: guardian.Heartbeat) -> str:
    """What guardian.watch() says of the sleeper (through its pidfd); the heartbeat is
    closed and a stopped sleeper continued afterwards."""
    p, start = sleeper
    fd = os.pidfd_open(p.pid)
    try:
        return guardian.watch("/proc", p.pid, start, hb.path, fd)
    finally:
        os.close(fd)
        hb.close()
        os.kill(p.pid, signal.SIGCONT)


def test_a_beating_daemon_is_looked_at_once_per_stale_time_less_a_beat(
    monkeypatch: pytest.MonkeyPatch,
    sleeper: tuple[subprocess.Popen[bytes], int],
    tmp_path: Path,
) -> None:
    """Beating every BEAT_S for 60 s, then hung: the guardian looks about every
    STALE_S - BEAT_S (not four times a second), and says HUNG STALE_S after the last
    beat, to the millisecond."""
    p = sleeper[0]
    hb = guardian.Heartbeat(str(tmp_path), p.pid)
    touch(hb.path, T0)
    last = 60.0
    clock, pollers = fake_world(monkeypatch, beats_until(hb.path, guardian.BEAT_S, last))
    assert watched(sleeper, hb) == guardian.HUNG
    sleeps = pollers[0].sleeps
    # one look per (STALE_S - BEAT_S) while beating, one more at the stale time
    assert len(sleeps) <= last / (guardian.STALE_S - guardian.BEAT_S) + 2, sleeps
    assert min(sleeps) >= guardian.STALE_S - guardian.BEAT_S, sleeps
    assert max(sleeps) <= guardian.STALE_S + 0.01, sleeps
    seen_hung = clock.now - T0
    assert last + guardian.STALE_S < seen_hung <= last + guardian.STALE_S + 0.01, seen_hung


def watch_a_stop(
    monkeypatch: pytest.MonkeyPatch,
    sleeper: tuple[subprocess.Popen[bytes], int],
    hb: guardian.Heartbeat,
    stop_at: float,
    beating: bool,
) -> tuple[FakeClock, list[FakePoller]]:
    """The guardian watches the sleeper (beating every BEAT_S until then, if
    ``beating``), which is SIGSTOPped ``stop_at`` seconds in; it must say STOPPED.
    The fake world's clock and pollers, for the timing."""
    p = sleeper[0]

    def script(begin: float, end: float) -> bool:
        if beating:
            beats_until(hb.path, guardian.BEAT_S, stop_at)(begin, end)
        if end >= T0 + stop_at and begin < T0 + stop_at:
            os.kill(p.pid, signal.SIGSTOP)
            wait_state(p.pid, "T")
        return False

    world = fake_world(monkeypatch, script)
    assert watched(sleeper, hb) == guardian.STOPPED
    return world


def test_a_stopped_daemon_is_seen_stopped_when_its_heartbeat_goes_stale(
    monkeypatch: pytest.MonkeyPatch,
    sleeper: tuple[subprocess.Popen[bytes], int],
    tmp_path: Path,
) -> None:
    """SIGSTOP right after a beat (the worst case): STOPPED, not HUNG, STALE_S after that
    beat; with BEAT_S before the stop at most, the release starts within STALE_S of the
    stop, and the guardian did not look in between more than once per beat gap."""
    hb = guardian.Heartbeat(str(tmp_path), sleeper[0].pid)
    stop_at = 10.0
    touch(hb.path, T0)
    clock, pollers = watch_a_stop(monkeypatch, sleeper, hb, stop_at, beating=True)
    seen = clock.now - T0
    assert stop_at + guardian.STALE_S < seen <= stop_at + guardian.STALE_S + 0.01, seen
    assert len(pollers[0].sleeps) <= stop_at / (guardian.STALE_S - guardian.BEAT_S) + 2


def test_before_the_first_beat_it_polls_for_the_stopped_state(
    monkeypatch: pytest.MonkeyPatch,
    sleeper: tuple[subprocess.Popen[bytes], int],
    tmp_path: Path,
) -> None:
    """mtime 0 (the daemon's first rescan): looks every START_POLL_S; a stop is
    STOPPED after STOPPED_POLLS looks in a row."""
    hb = guardian.Heartbeat(str(tmp_path), sleeper[0].pid)  # mtime 0: not beating yet
    stop_at = 3.0
    clock, pollers = watch_a_stop(monkeypatch, sleeper, hb, stop_at, beating=False)
    assert all(abs(s - guardian.START_POLL_S - 0.001) < 1e-9 for s in pollers[0].sleeps)
    seen = clock.now - T0
    most = stop_at + guardian.STOPPED_POLLS * (guardian.START_POLL_S + 0.001)
    assert stop_at < seen <= most, seen


def test_a_wall_clock_stepped_back_does_not_blind_it(
    monkeypatch: pytest.MonkeyPatch,
    sleeper: tuple[subprocess.Popen[bytes], int],
    tmp_path: Path,
) -> None:
    """A heartbeat an hour in the future (the wall clock stepped back) is not stale for
    an hour: the guardian still looks every STALE_S at most, and a stopped daemon is
    STOPPED after STOPPED_POLLS looks."""
    p = sleeper[0]
    hb = guardian.Heartbeat(str(tmp_path), p.pid)
    touch(hb.path, T0 + 3600)
    os.kill(p.pid, signal.SIGSTOP)
    wait_state(p.pid, "T")
    clock, pollers = fake_world(monkeypatch, lambda a, b: False)
    assert watched(sleeper, hb) == guardian.STOPPED
    sleeps = pollers[0].sleeps
    assert len(sleeps) == guardian.STOPPED_POLLS - 1
    assert max(sleeps) <= guardian.STALE_S + 0.01, sleeps
    assert clock.now - T0 <= guardian.STOPPED_POLLS * (guardian.STALE_S + 0.01)


def test_a_death_ends_the_sleep_through_the_pidfd(
    sleeper: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    """The real poller: a daemon that dies mid-sleep is DIED at once, long before its
    heartbeat could be stale."""
    p, start = sleeper
    hb = guardian.Heartbeat(str(tmp_path), p.pid)
    hb.beat(0.0)
    fd = os.pidfd_open(p.pid)
    try:
        threading.Timer(0.1, p.kill).start()
        t = time.monotonic()
        assert guardian.watch("/proc", p.pid, start, hb.path, fd) == guardian.DIED
        assert time.monotonic() - t < guardian.STALE_S  # not at the stale time
    finally:
        os.close(fd)
        hb.close()


def wait_state(pid: int, state: str) -> None:
    for _ in range(1000):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == state:
            return
        time.sleep(0.002)
    raise AssertionError(f"{pid} never in state {state}")


# -- the daemon's half: beats piggyback on the loop's wake-ups --------------------------


class CountingHeartbeat(guardian.Heartbeat):
    def __init__(self, state_dir: str, pid: int) -> None:
        super().__init__(state_dir, pid)
        self.touched: list[float] = []

    def beat(self, now: float, force: bool = False) -> float:
        before = self._next
        due = super().beat(now, force)
        if due != before:
            self.touched.append(now)
        return due


@pytest.fixture
def short_beat(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(guardian, "BEAT_S", 0.1)
    monkeypatch.setattr(guardian, "EARLY_S", 0.05)
    return 0.1


def test_an_idle_loop_wakes_only_for_the_beat_and_beats_at_each_wake(
    short_beat: float, tmp_path: Path
) -> None:
    """Nothing else to do: the loop sleeps until the heartbeat is due (the poll timeout
    is the beat, no longer) and each wake-up beats (none early, none for nothing)."""
    _, core, ports = make()
    hb = CountingHeartbeat(str(tmp_path), os.getpid())
    live = Liveness(core, time.monotonic, Notifier({}), hb)  # type: ignore[arg-type]
    loop = Loop(core, ports, rescan_interval=60, pulse_due=live.due)
    run_for(loop, 10, until=lambda: live() or len(hb.touched) >= 5)
    hb.close()
    assert len(hb.touched) >= 5
    # every turn of the loop after the first beat, and no turn happened without one
    assert len(core.ticks) == len(hb.touched) - 1, (core.ticks, hb.touched)


def test_a_busy_loop_beats_on_the_wake_ups_it_has_anyway(short_beat: float, tmp_path: Path) -> None:
    """The core's own deadlines (a host poll) come every 0.3 beat: the heartbeat rides
    on them (every other wake-up) and never adds a wake-up of its own."""
    deadlines: list[float] = []

    def deadline(now: float) -> float:
        deadlines.append(now + 0.3 * short_beat)
        return deadlines[-1]

    _, core, ports = make(deadline)
    hb = CountingHeartbeat(str(tmp_path), os.getpid())
    live = Liveness(core, time.monotonic, Notifier({}), hb)  # type: ignore[arg-type]
    loop = Loop(core, ports, rescan_interval=60, pulse_due=live.due)
    run_for(loop, 10, until=lambda: live() or len(core.ticks) >= 30)
    hb.close()
    # each wake-up came at the core's deadline, not before (not for the heartbeat)
    early = [t for t, d in zip(core.ticks[1:], deadlines, strict=False) if t < d]
    assert early == [], early
    assert len(hb.touched) >= len(core.ticks) // 3  # it did beat, on those wake-ups


class LoopClock:
    """The loop's clock and poller, faked: poll(ms) moves the clock by ms (nothing is
    ever readable); a rescan takes ``rescan_s``."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wakes: list[float] = []

    def __call__(self) -> float:
        return self.now

    def poller(self) -> LoopClock:
        return self

    def register(self, fd: int, mask: int) -> None:
        pass

    def poll(self, timeout_ms: int) -> list[tuple[int, int]]:
        self.now += timeout_ms / 1000
        self.wakes.append(self.now)
        return []


def idle_minute(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    clock: LoopClock,
    core: FakeCore,
    ports: FakePorts,
    slack: float,
) -> CountingHeartbeat:
    """Run the loop for a minute of the fake clock with the 2 s rescans, each taking
    30 ms (so they drift past the beats and looks), beating a counting heartbeat."""
    rescan = core.rescan

    def slow_rescan(now: float, starting: bool = False) -> None:
        rescan(now, starting)
        clock.now += 0.03

    monkeypatch.setattr(core, "rescan", slow_rescan)
    hb = CountingHeartbeat(str(tmp_path), os.getpid())
    live = Liveness(core, clock, Notifier({}), hb)  # type: ignore[arg-type]
    loop = Loop(
        core, ports, rescan_interval=2.0, clock=clock, pulse_due=live.due, pulse_slack=slack
    )
    loop.run(until=lambda: live() or clock.now > 1060.0)
    hb.close()
    return hb


@pytest.mark.parametrize("slack", [guardian.PULSE_SLACK_S, 0.0])
def test_a_beat_due_just_before_a_rescan_rides_on_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, slack: float
) -> None:
    """Idle with the default 2 s rescans, each taking 30 ms: the beat due at the same
    time as a rescan waits for it (PULSE_SLACK_S) instead of waking the loop a few ms
    before it; one wake-up a second, and the beat never late by more than the slack.
    Without the slack the rescan's drift costs a wake-up of its own every 2 s."""
    from memcgctl.daemon import loop as loop_mod

    monkeypatch.setattr(loop_mod, "RESCAN_EARLY_S", 0.0)  # the beat's slack alone
    clock = LoopClock()
    monkeypatch.setattr(select, "poll", clock.poller)
    _, core, ports = make()
    hb = idle_minute(monkeypatch, tmp_path, clock, core, ports, slack)
    per_s = len(clock.wakes) / 60
    if slack:
        assert per_s <= 1.0, (per_s, clock.wakes)
    else:  # a beat-only wake-up a few ms before every other rescan
        assert per_s > 1.2, (per_s, clock.wakes)
    gaps = [b - a for a, b in zip(hb.touched, hb.touched[1:], strict=False)]
    assert max(gaps) <= guardian.BEAT_S + slack + 0.03 + 0.002, gaps


@pytest.mark.parametrize("early", [True, False])
def test_a_periodic_rescan_due_soon_rides_on_a_host_poll(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, early: bool
) -> None:
    """Host mode, memory free: a look at MemAvailable every second (the core's
    deadline) and the 2 s rescan, which takes 30 ms and so drifts past the looks.  A
    rescan due within RESCAN_EARLY_S is done on the look's wake-up: one wake-up a
    second, heartbeat included.  Without it, a wake-up of its own every 2 s."""
    from memcgctl.daemon import loop as loop_mod

    if not early:
        monkeypatch.setattr(loop_mod, "RESCAN_EARLY_S", 0.0)
    clock = LoopClock()
    monkeypatch.setattr(select, "poll", clock.poller)
    looks: list[float] = []

    def deadline(now: float) -> float:
        if not looks or now >= looks[-1]:
            looks.append(now + 1.0)
        return looks[-1]

    _, core, ports = make(deadline)
    idle_minute(monkeypatch, tmp_path, clock, core, ports, guardian.PULSE_SLACK_S)
    per_s = len(clock.wakes) / 60
    assert len(core.rescans) >= 60 / (2.0 + 0.03 + 0.002) - 1  # never later than due
    if early:
        assert per_s <= 1.02, (per_s, clock.wakes)
    else:
        assert per_s > 1.3, (per_s, clock.wakes)


def test_looks_closer_than_a_beat_beat_once_a_second(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Host mode at 69 % used (issue 22's loaded idle): a look at MemAvailable every
    0.57 s and the 2 s rescan (30 ms each).  A beat rides on a look only once the last
    one is EARLY_S old, so the heartbeat (and the bash watcher it wakes) beats at every
    other look, not at each one, never more than BEAT_S + PULSE_SLACK_S apart; the
    rescan rides on the look nearest its time (RESCAN_EARLY_S either side): the loop
    wakes for the looks alone."""
    clock = LoopClock()
    monkeypatch.setattr(select, "poll", clock.poller)
    looks: list[float] = []

    def deadline(now: float) -> float:
        if not looks or now >= looks[-1]:
            looks.append(now + 0.57)
        return looks[-1]

    _, core, ports = make(deadline)
    hb = idle_minute(monkeypatch, tmp_path, clock, core, ports, guardian.PULSE_SLACK_S)
    gaps = [b - a for a, b in zip(hb.touched, hb.touched[1:], strict=False)]
    assert len(hb.touched) <= 60, hb.touched  # once a second (was at each look: 107)
    assert max(gaps) <= guardian.BEAT_S + guardian.PULSE_SLACK_S + 0.03 + 0.002, gaps
    # neither the beat nor the 2 s rescan has a wake-up of its own: both ride on looks
    alone = [t for t in clock.wakes if all(abs(t - look) > 0.001 for look in looks)]
    assert alone == [], alone
    assert len(core.rescans) >= 60 / (2.0 + 0.5 + 0.03) - 1  # late by RESCAN_EARLY_S at most


def test_under_systemds_watchdog_the_loop_wakes_for_its_pings(tmp_path: Path) -> None:
    """No heartbeat (``--guardian=systemd``): the loop's poll timeout is the next
    ``WATCHDOG=1`` (half of $WATCHDOG_USEC), sent over a real socket; nothing else
    wakes it, and every wake-up pings."""
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(tmp_path / "notify"))
    s.settimeout(5)
    try:
        _, core, ports = make()
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "200000"})
        live = Liveness(core, time.monotonic, notifier, None)  # type: ignore[arg-type]
        loop = Loop(core, ports, rescan_interval=60, pulse_due=live.due)
        run_for(loop, 10, until=lambda: live() or len(core.ticks) >= 4)
        got = []
        s.settimeout(0.05)
        while True:
            try:
                got.append(s.recv(4096))
            except TimeoutError:
                break
    finally:
        s.close()
    assert got[0] == b"READY=1\nSTATUS=enforcing"
    pings = got.count(b"WATCHDOG=1")
    assert pings == len(core.ticks) + 1, (got, core.ticks)  # each turn, and the last check
