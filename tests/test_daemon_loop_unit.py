"""The daemon's loop (daemon/loop.py) with a fake core and fake ports over real fds:
what it calls at start and end, what each kind of wake-up leads to, and that it sleeps
(a loop that spins burns a CPU while nothing happens: it once did, see
test_a_file_that_always_polls_readable)."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import memcgctl.daemon.loop as loop_module
from memcgctl.daemon.loop import Loop
from memcgctl.daemon.protocol import KERNEL_LOG, Feed, Wake
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.model import ProcessInfo
from tests.snapbuild import P

# A loop that sleeps between deadlines wakes a handful of times in a window this long;
# one that spins wakes thousands of times.
WINDOW = 0.3
SLEEPING = 20  # more wake-ups than this in WINDOW: spinning
A = CgroupPath("/a")


class FakeCore:
    def __init__(self, calls: list[str], deadline: Callable[[float], float | None]) -> None:
        self.calls = calls
        self.deadline = deadline
        self.ticks: list[float] = []
        self.notified: list[Scope] = []
        self.rescans: list[float] = []
        self.kernel: list[tuple[CgroupPath, int]] = []
        self.faults: list[tuple[str, Scope | None, str]] = []
        self.is_busy = False

    def busy(self) -> bool:
        return self.is_busy

    def rescan(self, now: float, starting: bool = False) -> None:
        self.calls.append("rescan(starting)" if starting else "rescan")
        if not starting:
            self.rescans.append(now)

    def tick(self, now: float) -> float | None:
        self.ticks.append(now)
        return self.deadline(now)

    def notify(self, cg: Scope, now: float) -> None:
        self.notified.append(cg)

    def kernel_killed(self, domain: CgroupPath, victim: ProcessInfo) -> None:
        self.kernel.append((domain, victim.pid))

    def release_all(self) -> None:
        self.calls.append("release_all")

    def fault(self, where: str, cg: Scope | None, exc: BaseException) -> None:
        self.faults.append((where, cg, str(exc)))


class FakePorts:
    """Watched fds are real (pipes, files); ``results`` says what consume reports."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.watched: dict[int, Scope | Feed] = {}
        self.masks: dict[int, int] = {}
        self.results: dict[int, Wake] = {}
        self.consumed: list[tuple[Scope, bool]] = []
        self.kills: list[tuple[CgroupPath, ProcessInfo]] = []
        self.exiting: list[int] = []  # pidfds of victims still exiting (exit_fds)

    def watch(
        self, fd: int, cg: Scope | Feed, mask: int = select.POLLIN, result: Wake = Wake.FIRED
    ) -> None:
        """Watch fd for cg (KERNEL_LOG for the kernel log)."""
        self.watched[fd] = cg
        self.masks[fd] = mask
        self.results[fd] = result

    def open_kernel_log(self) -> None:
        self.calls.append("open_kernel_log")

    def release_orphans(self) -> list[CgroupPath]:
        self.calls.append("release_orphans")
        return []

    def fds(self) -> dict[int, Scope | Feed]:
        return dict(self.watched)

    def poll_events(self, fd: int) -> int:
        return self.masks[fd]

    def consume(self, cg: Scope, fd: int, error: bool) -> Wake:
        self.consumed.append((cg, error))
        with contextlib.suppress(OSError):
            os.read(fd, 64)
        result = self.results[fd]
        if result is Wake.GONE:
            del self.watched[fd]
        return result

    def kernel_kills(self) -> list[tuple[CgroupPath, ProcessInfo]]:
        self.calls.append("kernel_kills")
        out, self.kills = self.kills, []
        return out

    def exit_fds(self) -> list[int]:
        return list(self.exiting)

    def close_all(self) -> None:
        self.calls.append("close_all")


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def make(
    deadline: Callable[[float], float | None] = lambda now: None,
) -> tuple[list[str], FakeCore, FakePorts]:
    calls: list[str] = []
    return calls, FakeCore(calls, deadline), FakePorts(calls)


def run_for(loop: Loop, seconds: float, until: Callable[[], bool] = lambda: False) -> None:
    """Run the loop for ``seconds`` at most (stop() wakes it from poll()), or until."""
    end = time.monotonic() + seconds
    stopper = threading.Timer(seconds, loop.stop)
    stopper.start()
    try:
        loop.run(until=lambda: until() or time.monotonic() >= end)
    finally:
        stopper.cancel()


def test_start_and_end_in_order() -> None:
    calls, core, ports = make(deadline=lambda now: now)
    loop = Loop(core, ports, rescan_interval=60)
    loop.run(until=lambda: len(core.ticks) >= 1)
    assert calls == [
        "open_kernel_log",
        "rescan(starting)",
        "release_orphans",
        "release_all",
        "close_all",
    ]
    assert len(core.ticks) == 1


def test_the_loop_survives_a_core_that_raises_and_releases_at_the_end() -> None:
    """Issue 21: an unexpected error is reported and the loop carries on (pausing a
    little, not spinning); at the end the core and ports are released as usual."""
    calls, core, ports = make()

    def boom(now: float) -> float | None:
        if len(core.ticks) <= 3:
            raise RuntimeError("core bug")
        return now + 0.01

    core.deadline = boom
    loop = Loop(core, ports, rescan_interval=60)
    run_for(loop, 5.0, until=lambda: len(core.ticks) >= 5)
    assert len(core.ticks) >= 5  # it kept going after the faults
    assert core.faults[:3] == [("loop", None, "core bug")] * 3
    assert len(core.faults) == 3
    # paused between faults (FAULT_PAUSE_S), never a busy loop
    assert core.ticks[3] - core.ticks[0] >= 0.25
    assert calls[-2:] == ["release_all", "close_all"]


def test_one_cgroups_notification_that_raises_does_not_stop_the_others(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    r2, w2 = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _, core, ports = make()
    b = CgroupPath("/b")
    ports.watch(r, A)
    ports.watch(r2, b)
    notified: list[Scope] = []

    def notify(cg: Scope, now: float) -> None:
        if cg == A:
            raise OSError(5, "Input/output error")
        notified.append(cg)

    core.notify = notify  # type: ignore[method-assign]
    os.write(w, b"x")
    os.write(w2, b"x")
    try:
        run_for(Loop(core, ports, rescan_interval=60), 2.0, until=lambda: bool(notified))
    finally:
        os.close(r2)
        os.close(w2)
    assert notified == [b]
    assert [(where, cg) for where, cg, _ in core.faults] == [("notification", A)]


@pytest.mark.parametrize(
    ("result", "notified", "rescanned"),
    [(Wake.FIRED, [A], 0), (Wake.QUIET, [], 0), (Wake.GONE, [], 1)],
)
def test_what_a_wake_up_leads_to(
    pipe: tuple[int, int], result: Wake, notified: list[Scope], rescanned: int
) -> None:
    r, w = pipe
    _, core, ports = make()
    ports.watch(r, A, result=result)
    os.write(w, b"x")
    run_for(Loop(core, ports, rescan_interval=60), 5, until=lambda: bool(ports.consumed))
    assert ports.consumed == [(A, False)]
    assert core.notified == notified and len(core.rescans) == rescanned


def test_a_hung_up_fd_is_consumed_as_an_error(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(w)  # POLLHUP on the read end, whatever the mask
    _, core, ports = make()
    ports.watch(r, A, mask=select.POLLPRI, result=Wake.GONE)
    run_for(Loop(core, ports, rescan_interval=60), WINDOW)
    assert ports.consumed == [(A, True)] and len(core.rescans) == 1
    assert len(core.ticks) < SLEEPING


def test_the_kernel_log_fd_reports_the_kernels_kills(pipe: tuple[int, int]) -> None:
    r, w = pipe
    calls, core, ports = make()
    ports.watch(r, KERNEL_LOG)
    ports.kills = [(CgroupPath("/jobs"), P(42, "/jobs/a").info())]
    os.write(w, b"x")
    run_for(Loop(core, ports, rescan_interval=60), 5, until=lambda: bool(core.kernel))
    assert core.kernel == [("/jobs", 42)]
    assert "kernel_kills" in calls and ports.consumed == []  # not a cgroup notification


def test_stop_wakes_a_loop_asleep_without_deadline() -> None:
    _, core, ports = make()
    loop = Loop(core, ports, rescan_interval=60)
    threading.Timer(0.1, loop.stop).start()
    start = time.monotonic()
    loop.run()
    assert time.monotonic() - start < 2
    assert len(core.ticks) == 1  # slept in poll() until stop(), did not spin


def test_sleeps_until_the_cores_deadline() -> None:
    _, core, ports = make(deadline=lambda now: now + 0.05)
    run_for(Loop(core, ports, rescan_interval=60), 5, until=lambda: len(core.ticks) >= 5)
    assert len(core.ticks) == 5
    gaps = [b - a for a, b in zip(core.ticks, core.ticks[1:], strict=False)]
    assert min(gaps) >= 0.045  # woken at the deadline, not before


def test_rescans_at_the_interval() -> None:
    _, core, ports = make()
    run_for(Loop(core, ports, rescan_interval=0.05), 5, until=lambda: len(core.rescans) >= 3)
    assert len(core.rescans) == 3 and len(core.ticks) <= 4  # one tick per wake-up
    gaps = [b - a for a, b in zip(core.rescans, core.rescans[1:], strict=False)]
    assert min(gaps) >= 0.045


@pytest.mark.parametrize(("mask", "spins"), [(select.POLLPRI, False), (select.POLLIN, True)])
def test_a_file_that_always_polls_readable(tmp_path: Path, mask: int, spins: bool) -> None:
    """A cgroup event file (memory.events, a PSI trigger) always polls POLLIN and
    signals with POLLPRI: waiting for POLLIN on it made the loop spin.  A plain file
    polls the same way, so it stands in for one.  (The POLLIN case shows that this
    test sees a spin when there is one.)"""
    f = tmp_path / "memory.events"
    f.write_text("oom 0\n")
    fd = os.open(f, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _, core, ports = make()
        ports.watch(fd, A, mask=mask, result=Wake.QUIET)
        run_for(Loop(core, ports, rescan_interval=60), WINDOW)
    finally:
        os.close(fd)
    assert (len(core.ticks) >= SLEEPING) is spins, len(core.ticks)
    assert core.notified == []


class FakeTree:
    """A tree watch whose fd is a pipe: each byte written is one change."""

    def __init__(self, fd: int, wanted: bool = True) -> None:
        self.fd = fd
        self.wanted = wanted
        self.pumps = 0
        self.walks = False
        self.stashed = False

    def fileno(self) -> int:
        return self.fd

    def pump(self) -> bool:
        self.pumps += 1
        self.stashed = False
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 1)  # one batch at a time, as the real one reads
        return self.wanted

    def wants_rescan(self) -> bool:
        return False

    def walk_due(self) -> bool:
        return self.walks


class IdleTree(FakeTree):
    """A tree watch with nothing to say, whose next rescan walks or not."""

    def __init__(self, fd: int, walks: bool) -> None:
        super().__init__(fd)
        self.walks = walks


def test_a_tree_change_rescans_at_once_and_a_churn_is_coalesced(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    _calls, core, ports = make()
    tree = FakeTree(r)
    loop = Loop(core, ports, rescan_interval=60, tree=tree)
    os.write(w, b"x")
    run_for(loop, 5, until=lambda: bool(core.rescans))
    assert len(core.rescans) == 1 and tree.pumps == 1  # long before the 60 s interval

    _calls, core, ports = make()
    tree = FakeTree(r)
    os.write(w, b"x" * 200)  # a churn: 200 batches queued at once
    ticks = iter(range(10**9))  # a clock that moves 1 ms each time it is read

    def clock() -> float:
        return next(ticks) / 1000

    loop = Loop(core, ports, rescan_interval=60, tree=tree, clock=clock)
    run_for(loop, 5, until=lambda: tree.pumps >= 200 and bool(core.rescans))
    assert tree.pumps == 200
    # coalesced: at most one rescan per TREE_SETTLE_S (50 reads of this clock)
    assert 1 <= len(core.rescans) <= 200 * 8 // 50, len(core.rescans)


def test_a_batch_the_plans_mark_read_still_rescans(pipe: tuple[int, int]) -> None:
    """TreeWatch.mark() reads queued events itself (the daemon's own memory.high write
    just before choosing ahead): what they wanted is stashed, and the loop's next turn
    rescans for it with no event left on the fd."""
    r, _w = pipe
    _calls, core, ports = make()
    tree = FakeTree(r)
    tree.stashed = True
    loop = Loop(core, ports, rescan_interval=60, tree=tree)
    run_for(loop, 5, until=lambda: bool(core.rescans))
    assert len(core.rescans) == 1 and tree.pumps == 1  # long before the 60 s interval


def test_a_tree_event_that_changes_nothing_does_not_rescan(pipe: tuple[int, int]) -> None:
    r, w = pipe
    _calls, core, ports = make()
    tree = FakeTree(r, wanted=False)
    os.write(w, b"xyz")
    run_for(Loop(core, ports, rescan_interval=60, tree=tree), 5, until=lambda: tree.pumps >= 3)
    run_for(Loop(core, ports, rescan_interval=60, tree=tree), WINDOW)
    assert tree.pumps == 3 and core.rescans == []


def test_a_notification_during_a_long_rescan_is_handled_within_the_walk(
    pipe: tuple[int, int],
) -> None:
    """Issue 22: the ports' walk of a big tree calls the pulse every few dozen cgroups;
    the loop then handles what fired meanwhile and ticks (the kill happens there), not
    after the walk.  The kernel log waits for the loop."""
    r, w = pipe
    klog_r, klog_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    calls, core, ports = make()
    ports.watch(r, A)
    ports.watch(klog_r, KERNEL_LOG)
    loop = Loop(core, ports, rescan_interval=0.05)
    during: list[tuple[list[Scope], int, int, int]] = []
    plain_rescan = core.rescan

    def walking_rescan(now: float, starting: bool = False) -> None:
        plain_rescan(now, starting)
        if starting:
            loop.urgent()  # before the loop registered its fds: nothing to do
            assert not core.notified
            return
        os.write(w, b"x")  # the memcg fires while the walk is under way
        os.write(klog_w, b"x")
        ticks, klog = len(core.ticks), calls.count("kernel_kills")
        loop.urgent()
        loop.urgent()
        during.append(
            (
                list(core.notified),
                len(core.ticks) - ticks,
                len(ports.consumed),
                calls.count("kernel_kills") - klog,
            )
        )

    core.rescan = walking_rescan  # type: ignore[method-assign]
    try:
        run_for(loop, 5.0, until=lambda: bool(during))
    finally:
        os.close(klog_r)
        os.close(klog_w)
    notified, ticks, consumed, klog_reads = during[0]
    assert notified == [A]  # handled inside the walk
    assert ticks == 2 and consumed == 1  # each pulse ticks; the fd was read once
    assert klog_reads == 0  # the kernel log waits for the loop
    assert not core.faults


@pytest.mark.parametrize(
    ("tree", "busy", "rescans"),
    [
        (None, False, True),  # every rescan walks; idle: on time
        (None, True, False),  # every rescan walks; an episode: they wait
        ("walks", True, False),  # the safety-net walk is due: it waits
        ("incremental", True, True),  # the tree watch's events: never held back
    ],
)
def test_a_whole_tree_walk_waits_while_an_episode_is_under_way(
    pipe: tuple[int, int], tree: str | None, busy: bool, rescans: bool
) -> None:
    """Issue 22: never a whole-tree walk on the OOM path (5,000 cgroups walked during an
    unthrottled host OOM stalled the guest's loop for 2.5 s).  While the core is busy a
    rescan that walks waits (BUSY_RESCAN_S), without spinning; one that only reads the
    tree watch's events does not."""
    r, _w = pipe
    _calls, core, ports = make()
    core.is_busy = busy
    watch = None if tree is None else IdleTree(r, walks=tree == "walks")
    loop = Loop(core, ports, rescan_interval=0.02, tree=watch)
    run_for(loop, WINDOW)
    assert (len(core.rescans) >= 3) is rescans, core.rescans
    assert len(core.ticks) < SLEEPING + len(core.rescans)  # waiting, not spinning


def test_a_walk_held_back_runs_after_busy_rescan_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop_module, "BUSY_RESCAN_S", 0.1)
    _calls, core, ports = make()
    core.is_busy = True
    loop = Loop(core, ports, rescan_interval=0.02)
    run_for(loop, 5, until=lambda: len(core.rescans) >= 2)
    assert len(core.rescans) >= 2
    assert core.rescans[1] - core.rescans[0] >= 0.1


def test_the_start_walk_for_orphaned_marks_serves_notifications(pipe: tuple[int, int]) -> None:
    """Issue 22: after the first rescan the daemon walks the whole tree for a dead
    instance's marks (3.3 s over 5,000 cgroups in the emulated guest).  Its pulses
    reach urgent(), which must already have the fds to serve what fired meanwhile."""
    r, w = pipe
    calls, core, ports = make()
    ports.watch(r, A)
    loop = Loop(core, ports, rescan_interval=60)
    during: list[list[Scope]] = []

    def walking_release() -> list[CgroupPath]:
        calls.append("release_orphans")
        os.write(w, b"x")  # the memcg fires while the walk is under way
        loop.urgent()
        during.append(list(core.notified))
        return []

    ports.release_orphans = walking_release  # type: ignore[method-assign]
    run_for(loop, 5.0, until=lambda: bool(during))
    assert during == [[A]] and not core.faults


def test_a_victims_exit_wakes_the_loop() -> None:
    """Issue 22: after a kill the core waits for the victim's exit (its pidfd) before it
    writes the records and looks again; the loop sleeps on that pidfd too."""
    _, core, ports = make()
    victim = subprocess.Popen(["sleep", "30"])
    pidfd = os.pidfd_open(victim.pid)
    try:

        def deadline(now: float) -> float | None:
            if len(core.ticks) >= 2:
                ports.exiting.clear()  # the core saw it exit: the ports forget it
            return None  # no deadline of its own: only the exit can wake it

        core.deadline = deadline
        ports.exiting.append(pidfd)
        killer = threading.Timer(0.2, victim.kill)
        killer.start()
        loop = Loop(core, ports, rescan_interval=60)
        run_for(loop, 10.0, until=lambda: len(core.ticks) >= 2)
        killer.cancel()
        assert len(core.ticks) >= 2  # woken by the exit, long before the 10 s
        assert victim.wait(5) == -9
    finally:
        os.close(pidfd)
        if victim.poll() is None:
            victim.kill()
            victim.wait()
