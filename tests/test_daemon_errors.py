"""Errors the daemon carries on after are said, once: a ``memory.current`` (v2) or
``memory.oom_control`` (v1) that cannot be read, a knob that cannot be restored.

The fixture trees are plain files that root can always read, so the kernel's EIO and
EACCES come from a :class:`CgroupFs` that fails the reads (and writes) it is told to;
everything else is the real ports on a fixture tree, driven by the real core."""

from __future__ import annotations

import errno
import io
import os
import shutil
from pathlib import Path

import pytest

from memcgctl.actions.kill import make_killer
from memcgctl.daemon.core import DaemonCore
from memcgctl.daemon.journaling import Troubles
from memcgctl.daemon.ports import RealPorts
from memcgctl.daemon.status import StatusCore
from memcgctl.daemon.valve import CLEAR, RECOVERED
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.logic.priority import select_priority
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import PermissionDenied
from memcgctl.vocab.records import DaemonRecord
from tests.fakehost import FakeHost

MIB = 1 << 20
JOBS = CgroupPath("/jobs")


class FailingFs(CgroupFs):
    """The fixture's hierarchy, with the reads and writes of some files failing as the
    kernel would fail them (file name -> errno)."""

    def __init__(self, fs: CgroupFs) -> None:
        super().__init__(fs.hierarchy)
        self.fail_read: dict[str, int] = {}
        self.fail_write: dict[str, int] = {}

    def read(self, cg: CgroupPath, filename: str) -> str | None:
        code = self.fail_read.get(filename)
        if code is not None:
            raise OSError(code, os.strerror(code), f"{self.path(cg)}/{filename}")
        return super().read(cg, filename)

    def write(self, cg: CgroupPath, filename: str, value: str) -> None:
        code = self.fail_write.get(filename)
        if code is not None:
            raise PermissionDenied(f"{self.path(cg)}/{filename}: {os.strerror(code)}")
        super().write(cg, filename, value)


def setup(host: FakeHost, tmp_path: Path, dry_run: bool) -> tuple[RealPorts, FailingFs, Path]:
    d = host.cgroup("/jobs", limit=256 * MIB, usage=16 * MIB, delay_ms=1000)
    if host.version == 1:
        (d / "cgroup.event_control").touch()
    else:
        (d / "memory.high").write_text("max\n")
        (d / "memory.stat").write_text("anon 16777216\nactive_file 0\ninactive_file 0\n")
    env = host.env()
    fs = FailingFs(env.fs)
    env.fs = fs
    state = tmp_path / "state"
    ports = RealPorts(
        env,
        make_killer(env.proc_root, fs, env.proc),
        Journal(state),
        dry_run=dry_run,
        instance="this-boot/1/1",
        log=io.StringIO(),
    )
    return ports, fs, state


def said(ports: RealPorts, kind: str = "daemon_error") -> list[str]:
    log = ports.log
    assert isinstance(log, io.StringIO)
    return [line for line in log.getvalue().splitlines() if f">{kind} " in line]


def journaled(ports: RealPorts, state: Path) -> list[DaemonRecord]:
    ports.close_journal()
    return [ev for ev in Journal(state).read() if ev["kind"] == "daemon_error"]  # type: ignore[misc]


@pytest.mark.parametrize("code", [errno.EIO, errno.EACCES], ids=["EIO", "EACCES"])
@pytest.mark.parametrize("version", [1, 2])
def test_an_unreadable_level_is_said_once_and_the_daemon_goes_on(
    tmp_path: Path, version: int, code: int
) -> None:
    """memory.current (v2) or memory.oom_control (v1) fails with EIO or EACCES on every
    look: one warning line and one ``daemon_error`` record (journal, status counts), not
    one per look; the memcg stays managed and is looked at again when it reads fine."""
    host = FakeHost(tmp_path / "host", version=version)
    ports, fs, state = setup(host, tmp_path, dry_run=True)
    core = DaemonCore(ports, select_priority)
    status = StatusCore(core, state, StatusCore.facts_of(instance="this-boot/1/1"))
    ports.emit = status.counted(ports.emit)  # type: ignore[method-assign,assignment]
    core.rescan(0.0)
    assert JOBS in core.watches
    unreadable = "memory.current" if version == 2 else "memory.oom_control"
    fs.fail_read[unreadable] = code
    for i in range(5):  # notifications, ticks and rescans all look at the level
        core.notify(JOBS, 1.0 + i)
        core.tick(1.5 + i)
        core.rescan(1.7 + i)
    lines = said(ports)
    assert len(lines) == 1, lines
    (line,) = lines
    assert line.startswith("<4>daemon_error cgroup=/jobs where=level ")  # warning
    assert f"[Errno {code}]" in line and unreadable in line
    assert JOBS in core.watches and said(ports, "daemon_released") == []
    assert status.document()["counts"]["daemon_error"] == 1
    (record,) = journaled(ports, state)
    assert record["cgroup"] == "/jobs" and record["where"] == "level"  # type: ignore[typeddict-item]
    assert f"[Errno {code}]" in str(record["error"])  # type: ignore[typeddict-item]


def test_a_condition_is_said_again_when_it_comes_back_no_more_than_once_a_minute(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    ports, fs, _ = setup(fake_v2, tmp_path, dry_run=True)
    now = [100.0]
    ports.troubles.clock = lambda: now[0]
    assert ports.take_over(JOBS) is not None
    fs.fail_read["memory.current"] = errno.EIO
    ports.level(JOBS)
    fs.fail_read["memory.current"] = errno.EACCES  # another condition, 1 s later
    now[0] += 1
    ports.level(JOBS)
    assert len(said(ports)) == 1  # rate-limited
    now[0] += Troubles.REPEAT_S
    ports.level(JOBS)
    assert len(said(ports)) == 2 and "[Errno 13]" in said(ports)[1]
    del fs.fail_read["memory.current"]
    assert ports.level(JOBS).state == RECOVERED  # read fine: the condition cleared
    fs.fail_read["memory.current"] = errno.EACCES
    now[0] += 1
    ports.level(JOBS)
    assert len(said(ports)) == 2  # back within the minute: not yet
    now[0] += Troubles.REPEAT_S
    ports.level(JOBS)
    assert len(said(ports)) == 3
    ports.level(JOBS)
    assert len(said(ports)) == 3  # and once only


def test_a_vanished_cgroup_is_no_error(fake_v2: FakeHost, tmp_path: Path) -> None:
    ports, _, state = setup(fake_v2, tmp_path, dry_run=True)
    assert ports.take_over(JOBS) is not None
    shutil.rmtree(fake_v2.path("/jobs"))  # removed: the next rescan releases it
    assert ports.level(JOBS).state == CLEAR
    assert said(ports) == [] and journaled(ports, state) == []


def test_a_knob_that_cannot_be_restored_is_said(fake_v2: FakeHost, tmp_path: Path) -> None:
    """On release the valve cannot be taken off (memory.high refuses the write): the
    knob stays as the daemon set it, and the daemon says so."""
    ports, fs, state = setup(fake_v2, tmp_path, dry_run=False)
    assert ports.take_over(JOBS) is not None
    valve = (fake_v2.path("/jobs") / "memory.high").read_text().strip()
    assert valve != "max"
    fs.fail_write["memory.high"] = errno.EACCES
    ports.release(JOBS)
    (line,) = said(ports)
    assert line.startswith("<4>daemon_error cgroup=/jobs where=restore ")
    assert "memory.high" in line
    (record,) = journaled(ports, state)
    assert record["where"] == "restore"  # type: ignore[typeddict-item]


@pytest.mark.parametrize("version", [1, 2])
def test_a_cgroup_removed_before_it_is_taken_over_is_no_error(tmp_path: Path, version: int) -> None:
    """Listed by a rescan, removed before take_over reached it: not managed, and nothing
    said (a cgroup that went away is normal); the freeze of a removed domain likewise."""
    host = FakeHost(tmp_path / "host", version=version)
    ports, _, state = setup(host, tmp_path, dry_run=False)
    if version == 2:
        assert ports.take_over(JOBS) is not None
        shutil.rmtree(host.path("/jobs"))
        assert not ports.freeze(JOBS, True)
    else:
        shutil.rmtree(host.path("/jobs"))
        assert ports.take_over(JOBS) is None and JOBS not in ports.watches
    log = ports.log
    assert isinstance(log, io.StringIO)
    # informational lines only (v2: systemd-oomd told to leave the domain alone)
    assert [line for line in log.getvalue().splitlines() if not line.startswith("<6>")] == []
    assert journaled(ports, state) == []
