"""RealPorts' notification side on fixture trees: the poll mask per kind of fd, what
``consume`` reports, and the real loop over real ports sleeping while nothing happens.

The fixture's cgroup files are plain files, which poll() always reports readable
(POLLIN), as the kernel does for memory.events and PSI triggers: waiting for POLLIN on
them is the busy loop the daemon once had."""

from __future__ import annotations

import io
import os
import select
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from memcgctl.actions.kill import make_killer
from memcgctl.daemon.loop import Loop
from memcgctl.daemon.ports import RealPorts
from memcgctl.daemon.protocol import Wake
from memcgctl.daemon.valve import IDLE_MIN_POLL
from memcgctl.kernel.notify import EventsFileWatch, OomControlWatch, PsiTrigger
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import HOST, CgroupPath, Scope
from tests.fakehost import FakeHost
from tests.test_daemon_loop_unit import SLEEPING, WINDOW, make, run_for

MIB = 1 << 20
JOBS = CgroupPath("/jobs")


def ports(host: FakeHost, tmp_path: Path) -> RealPorts:
    env = host.env()
    return RealPorts(
        env,
        make_killer(env.proc_root, env.fs, env.proc),
        Journal(tmp_path / "state"),
        dry_run=True,  # nothing written to the fixture's knobs
        instance="this-boot/1/1",
        log=io.StringIO(),
    )


def only_fd(p: RealPorts, cg: Scope) -> int:
    (w,) = p.watches[cg]
    return w.fileno()


def v1_ports(host: FakeHost, tmp_path: Path) -> RealPorts:
    d = host.cgroup("/jobs", limit=256 * MIB, delay_ms=0)
    (d / "cgroup.event_control").touch()  # the eventfd registration lands in a file
    p = ports(host, tmp_path)
    assert p.take_over(JOBS) is not None
    assert isinstance(p.watches[JOBS][0], OomControlWatch)
    return p


def v2_ports(host: FakeHost, tmp_path: Path) -> tuple[RealPorts, Path]:
    d = host.cgroup("/jobs", limit=256 * MIB, delay_ms=0, events={"oom": 0, "low": 0})
    p = ports(host, tmp_path)
    assert p.take_over(JOBS) is not None
    assert isinstance(p.watches[JOBS][0], EventsFileWatch)
    return p, d / "memory.events"


def test_v1_eventfd_waits_for_pollin_and_counts_notifications(
    fake_v1: FakeHost, tmp_path: Path
) -> None:
    p = v1_ports(fake_v1, tmp_path)
    fd = only_fd(p, JOBS)
    assert p.fds() == {fd: JOBS}
    assert p.poll_events(fd) == select.POLLIN
    assert p.consume(JOBS, fd, False) is Wake.QUIET  # nothing counted yet
    os.eventfd_write(fd, 1)  # what the kernel does on an OOM
    assert p.consume(JOBS, fd, False) is Wake.FIRED
    assert p.consume(JOBS, fd, False) is Wake.QUIET  # drained
    shutil.rmtree(fake_v1.path("/jobs"))
    os.eventfd_write(fd, 1)  # v1 also fires once when the cgroup is removed
    assert p.consume(JOBS, fd, False) is Wake.GONE
    p.close_all()
    assert p.fds() == {}


def test_v2_memory_events_waits_for_pollpri_only(fake_v2: FakeHost, tmp_path: Path) -> None:
    p, _ = v2_ports(fake_v2, tmp_path)
    fd = only_fd(p, JOBS)
    mask = p.poll_events(fd)
    assert mask == select.POLLPRI and not mask & select.POLLIN
    poller = select.poll()
    poller.register(fd, mask)
    assert poller.poll(0) == []  # the always-readable file does not wake the loop
    p.close_all()


def test_v2_consume_fires_only_when_an_oom_counter_grows(fake_v2: FakeHost, tmp_path: Path) -> None:
    p, events = v2_ports(fake_v2, tmp_path)
    fd = only_fd(p, JOBS)
    assert p.consume(JOBS, fd, True) is Wake.QUIET  # kernfs wakes with POLLERR too
    events.write_text("oom 0\nlow 5\n")
    assert p.consume(JOBS, fd, True) is Wake.QUIET  # another counter
    events.write_text("oom 0\nlow 5\nhigh 1\n")
    assert p.consume(JOBS, fd, True) is Wake.FIRED
    events.write_text("oom 1\nlow 5\nhigh 1\n")
    assert p.consume(JOBS, fd, True) is Wake.FIRED
    assert p.consume(JOBS, fd, True) is Wake.QUIET  # read already
    p.close_all()


def test_host_psi_trigger_waits_for_pollpri_and_fires(fake_v1: FakeHost, tmp_path: Path) -> None:
    (fake_v1.proc / "pressure").mkdir()
    (fake_v1.proc / "pressure" / "memory").touch()  # the trigger is written into it
    p = ports(fake_v1, tmp_path)
    assert p.take_over(HOST) is not None
    assert isinstance(p.watches[HOST][0], PsiTrigger)
    fd = only_fd(p, HOST)
    assert p.poll_events(fd) == select.POLLPRI
    assert p.consume(HOST, fd, False) is Wake.FIRED
    assert p.consume(HOST, fd, True) is Wake.FIRED  # the host never goes away
    p.close_all()


def test_an_unknown_fd_is_quiet(fake_v2: FakeHost, tmp_path: Path) -> None:
    p, _ = v2_ports(fake_v2, tmp_path)
    fd = only_fd(p, JOBS)
    assert p.consume(CgroupPath("/elsewhere"), fd, False) is Wake.QUIET
    assert p.consume(JOBS, fd + 1000, False) is Wake.QUIET
    assert p.poll_events(fd + 1000) == select.POLLPRI
    p.close_all()


def test_the_loop_over_real_ports_sleeps_on_memory_events(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    """The regression test for the busy loop: real Loop, real ports, a v2 watch on a
    file that always polls readable, no deadline.  The loop must sleep in poll()."""
    p, _ = v2_ports(fake_v2, tmp_path)
    _, core, _ = make()
    start = time.monotonic()
    run_for(Loop(core, p, rescan_interval=60), WINDOW)
    assert time.monotonic() - start >= WINDOW * 0.9
    assert len(core.ticks) < SLEEPING, len(core.ticks)
    assert core.notified == [] and p.fds() == {}  # closed on the way out


def test_the_loop_over_real_ports_wakes_once_per_v1_notification(
    fake_v1: FakeHost, tmp_path: Path
) -> None:
    p = v1_ports(fake_v1, tmp_path)
    os.eventfd_write(only_fd(p, JOBS), 1)
    _, core, _ = make()
    run_for(Loop(core, p, rescan_interval=60), WINDOW)
    assert core.notified == [JOBS]
    assert len(core.ticks) < SLEEPING, len(core.ticks)


def _meminfo(host: FakeHost, avail_mib: int) -> None:
    (host.proc / "meminfo").write_text(
        f"MemTotal: {1000 * 1024} kB\nMemAvailable: {avail_mib * 1024} kB\n"
        "SwapTotal: 0 kB\nSwapFree: 0 kB\n"
    )


def test_host_level_polls_sooner_once_it_sees_memory_fall(
    fake_v1: FakeHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Idle, the host is looked at no faster than every 100 ms; when MemAvailable falls
    between two looks, the next look comes before the fall can cross the short line."""
    from memcgctl.daemon import ports as ports_mod

    now = [100.0]
    monkeypatch.setattr(ports_mod, "time", SimpleNamespace(monotonic=lambda: now[0]))
    p = ports(fake_v1, tmp_path)
    _meminfo(fake_v1, 310)  # 69 % used, nothing moving
    idle = p.level(HOST).poll
    assert idle is not None and idle >= IDLE_MIN_POLL
    now[0] += idle
    _meminfo(fake_v1, 130)  # 180 MiB gone in one interval
    soon = p.level(HOST).poll
    assert soon is not None and soon < IDLE_MIN_POLL
    rate = 180 * MIB / idle
    assert soon * rate < 30 * MIB  # the next look comes before the short line (100 MiB)


@pytest.mark.parametrize("version", [1, 2])
def test_a_memcg_is_near_its_line_and_looked_at_sooner_while_it_grows_towards_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    """Where the core keeps a standing plan (issue 22): v2 within one headroom below the
    valve (committed memory: page cache left out), v1 within an eighth of the limit; a
    memcg below it that grew since the last look is looked at again before the growth
    seen (doubled) could cross it; one that does not grow is not (no wake-up)."""
    from memcgctl.daemon import ports as ports_mod

    now = [100.0]
    monkeypatch.setattr(ports_mod, "time", SimpleNamespace(monotonic=lambda: now[0]))
    host = FakeHost(tmp_path / "host", version=version)
    d = host.cgroup("/jobs", limit=1000 * MIB, delay_ms=0)
    if version == 1:
        (d / "cgroup.event_control").touch()
    usage, stat = ("memory.usage_in_bytes", "total_") if version == 1 else ("memory.current", "")

    def charged(mib: int, cache_mib: int = 0) -> None:
        (d / usage).write_text(f"{(mib + cache_mib) * MIB}\n")
        (d / "memory.stat").write_text(
            f"{stat}anon {mib * MIB}\n{stat}active_file {cache_mib * MIB}\n{stat}inactive_file 0\n"
        )

    p = ports(host, tmp_path)
    assert p.take_over(JOBS) is not None
    line = 800 if version == 2 else 875  # MiB: the near line
    charged(500)
    assert p.level(JOBS).soon is None
    now[0] += 1.0
    charged(500)
    r = p.level(JOBS)
    assert not r.near and r.soon is None  # not growing: the next rescan looks
    now[0] += 1.0
    charged(line - 200)
    r = p.level(JOBS)
    assert not r.near and r.soon is not None
    assert r.soon * (line - 200 - 500) <= 200 / 2 + 1  # before the growth seen crosses it
    now[0] += r.soon
    charged(line)
    r = p.level(JOBS)
    assert r.near and r.soon is None
    now[0] += 1.0
    charged(line - 100, cache_mib=150)  # page cache: the limit reclaims it first
    assert not p.level(JOBS).near
