"""The daemon on cgroup v2, against the guest kernel: the OOM valve (memory.high below
memory.max) lets userspace decide first.  Success, as in issue 11: the policy's victim
died first and ``memory.events oom_kill`` of the OOM domain stayed 0.  Host-wide OOMs
run here only: the guest's own RAM is the "host" and the VM is thrown away."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.realkernel import HELPERS, TestCgroups, journaled
from tests.test_daemon_kernel import (
    CLAIM,
    MARK,
    Daemon,
    daemon_records,
    daemons,
    run_cli,
    set_xattr,
)
from tests.v2.test_oom_v2 import events_file

__all__ = ["daemons"]
MIB = 1 << 20
LIMIT = 256 * MIB
PAGE = 4096


def valve(limit: int) -> int:
    """The default valve: 10 % of memory.max below it, in whole pages."""
    return (limit - int(limit * 0.10)) // PAGE * PAGE


VALVE = valve(LIMIT)


def valves(limit: int, delay_ms: int) -> set[str]:
    """What memory.high may hold once the daemon took the domain over: the valve, and
    with delay 0 its lower step at the near line (daemon/valve.py), taken at the
    daemon's first look when memory.current is well below it."""
    high = valve(limit)
    return {str(high), str((2 * high - limit) // PAGE * PAGE)} if delay_ms == 0 else {str(high)}


def grow(
    tc: TestCgroups, cg: str, pause: float, upto_mib: int = 400, chunk_kib: int = 1024
) -> subprocess.Popen[bytes]:
    """A grower: chunk_kib at a time, pause seconds between chunks (0: unthrottled)."""
    argv = [sys.executable, str(HELPERS / "grow.py"), str(chunk_kib), str(upto_mib), str(pause)]
    return tc.spawn(cg, argv)


def high(tc: TestCgroups, cg: str) -> str:
    return (tc.path(cg) / "memory.high").read_text().strip()


def field(line: str, key: str) -> str:
    return line.split(f" {key}=", 1)[1].split()[0]


def vmstat_oom_kills() -> int:
    """The kernel's OOM kills since boot, host-wide (``/proc/vmstat oom_kill``)."""
    return int(Path("/proc/vmstat").read_text().split("oom_kill ")[1].split()[0])


def no_kernel_kill(tc: TestCgroups, cg: str) -> None:
    ev = events_file(tc, cg, local=False)
    assert (ev["oom"], ev["oom_kill"]) == (0, 0), ev


@pytest.fixture
def jobs(cgroups: TestCgroups) -> dict[str, str]:
    """Issue 11's scenario: /jobs (memory.max 256M) with low/ (badness 100) and high/
    (badness 900)."""
    top = cgroups.make("jobs", limit=LIMIT)
    low = cgroups.make("jobs/low", limit=None)
    hi = cgroups.make("jobs/high", limit=None)
    set_xattr(cgroups, low, "badness", "100")
    set_xattr(cgroups, hi, "badness", "900")
    return {"top": top, "low": low, "high": hi}


# delay (ms) × growth: 1 MiB every 20 ms (~50 MB/s), every 5 ms (~200 MB/s, what the
# emulated guest manages), unthrottled.  Every combination runs in
# bench/enforcement_bench.py; here one of each.
@pytest.mark.parametrize(("delay_ms", "pause"), [(0, 0.0), (300, 0.005), (1000, 0.02)])
def test_the_priority_victim_dies_before_the_kernel_acts(
    cgroups: TestCgroups,
    jobs: dict[str, str],
    tmp_path: Path,
    daemons: list[Daemon],
    delay_ms: int,
    pause: float,
) -> None:
    top = jobs["top"]
    set_xattr(cgroups, top, "oom_delay_ms", str(delay_ms))
    small = cgroups.hog(jobs["low"], mib=40)  # the policy's victim
    big = cgroups.hog(jobs["high"], mib=120)  # the kernel's: the biggest
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    _, line = d.wait_for("daemon_took_over", top, timeout=60)
    assert field(line, "mode") == "valve"
    assert high(cgroups, top) in valves(LIMIT, delay_ms)
    assert MARK in os.listxattr(cgroups.path(top))
    g = grow(cgroups, jobs["high"], pause)
    _, line = d.wait_for("under_oom", top, timeout=60)
    assert field(line, "source") == "memory.events"
    _, line = d.wait_for("daemon_kill", top, timeout=60)
    assert field(line, "pid") == str(small.pid), line
    assert int(field(line, "waited_ms")) >= delay_ms
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.kill()  # the scenario ends with the first victim
    g.wait(timeout=30)
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    journaled(tmp_path, "user_kill", small.pid)
    assert d.stop() == 0
    # everything the valve touched is as it was
    assert high(cgroups, top) == "max"
    assert (cgroups.path(top) / "cgroup.freeze").read_text().strip() == "0"
    assert MARK not in os.listxattr(cgroups.path(top))
    assert CLAIM not in os.listxattr(cgroups.path(cgroups.parent))


def test_a_nested_oom_domain_has_its_own_valve(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = cgroups.make("jobs", limit=LIMIT)
    inner = cgroups.make("jobs/inner", limit=64 * MIB)
    a = cgroups.make("jobs/inner/a", limit=None)
    b = cgroups.make("jobs/inner/b", limit=None)
    set_xattr(cgroups, a, "badness", "100")
    set_xattr(cgroups, b, "badness", "900")
    set_xattr(cgroups, top, "oom_delay_ms", "1000")
    set_xattr(cgroups, inner, "oom_delay_ms", "0")
    small = cgroups.hog(a, mib=8)
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    d.wait_for("daemon_took_over", inner, timeout=60)
    assert high(cgroups, inner) in valves(64 * MIB, 0)
    g = grow(cgroups, b, 0.0)
    _, line = d.wait_for("daemon_kill", inner, timeout=60)
    assert field(line, "pid") == str(small.pid), line
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    no_kernel_kill(cgroups, inner)
    assert not any(t.startswith("<4>daemon_kill ") and f"cgroup={top} " in t for _, t in d.lines)


def test_under_a_limited_ancestor_the_valve_sits_where_the_limit_is(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    lim = cgroups.make("lim", limit=128 * MIB)
    job = cgroups.make("lim/job", limit=None)
    a = cgroups.make("lim/job/a", limit=None)
    b = cgroups.make("lim/job/b", limit=None)
    set_xattr(cgroups, a, "badness", "100")
    set_xattr(cgroups, b, "badness", "900")
    set_xattr(cgroups, job, "oom_delay_ms", "0")
    small = cgroups.hog(a, mib=8)
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    _, line = d.wait_for("daemon_took_over", job, timeout=60)
    assert field(line, "domain") == lim
    assert high(cgroups, lim) in valves(128 * MIB, 0)
    assert high(cgroups, job) == "max"
    g = grow(cgroups, b, 0.005)
    _, line = d.wait_for("daemon_kill", job, timeout=60)
    assert field(line, "pid") == str(small.pid), line
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    no_kernel_kill(cgroups, lim)
    assert d.stop() == 0
    assert high(cgroups, lim) == "max"


def test_an_oom_group_victim_dies_as_a_group(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = jobs["top"]
    TestCgroups.write(cgroups.path(jobs["low"]), "memory.oom.group", "1")
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    members = [cgroups.hog(jobs["low"], mib=16), cgroups.hog(jobs["low"], mib=8)]
    big = cgroups.hog(jobs["high"], mib=100)
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    g = grow(cgroups, jobs["high"], 0.005)
    _, line = d.wait_for("daemon_kill", top, timeout=60)
    assert field(line, "kill_group") == jobs["low"], line
    for m in members:
        assert m.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    assert big.poll() is None
    no_kernel_kill(cgroups, top)


def test_a_job_manager_that_raises_the_limit_saves_everyone(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = jobs["top"]
    cgroups.set_limit(top, 160 * MIB)
    set_xattr(cgroups, top, "oom_delay_ms", "3000")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    g = grow(cgroups, jobs["low"], 0.005, upto_mib=150)  # past the valve, then stops
    d.wait_for("under_oom", top, timeout=60)
    assert g.poll() is None
    cgroups.set_limit(top, LIMIT)  # the job manager reacts within the delay
    _, line = d.wait_for("oom_resolved", top, timeout=60)
    assert field(line, "by") == "userspace"
    assert high(cgroups, top) == str(VALVE)  # the valve followed memory.max
    assert g.stdout is not None and g.stdout.readline() == b"survived\n"
    assert "daemon_kill" not in d.kinds()
    no_kernel_kill(cgroups, top)


@pytest.mark.parametrize("how", ["guardian", "release"])
def test_a_sigkilled_daemon_gives_the_users_memory_high_back(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon], how: str
) -> None:
    top = jobs["top"]
    TestCgroups.write(cgroups.path(top), "memory.high", str(250 * MIB))  # the user's own
    set_xattr(cgroups, top, "oom_delay_ms", "60000")
    d = Daemon(tmp_path, cgroups.parent, *(["--no-guardian"] if how == "release" else []))
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    assert high(cgroups, top) == str(VALVE)  # the lower of the two
    g = grow(cgroups, jobs["low"], 0.005, upto_mib=236)
    d.wait_for("under_oom", top, timeout=60)
    d.stop(signal.SIGKILL)
    if how == "guardian":
        _, line = d.wait_for("guardian:", None, timeout=60)
        assert f"memory.high={250 * MIB}" in line
    else:
        r = run_cli(tmp_path, "daemon", "--root", cgroups.parent, "--release")
        assert r.returncode == 0 and f"memory.high={250 * MIB}" in r.stdout, r.stdout + r.stderr
    assert high(cgroups, top) == str(250 * MIB)
    assert (cgroups.path(top) / "cgroup.freeze").read_text().strip() == "0"
    assert MARK not in os.listxattr(cgroups.path(top))
    g.kill()


def test_a_lower_memory_high_of_the_users_is_kept(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = jobs["top"]
    TestCgroups.write(cgroups.path(top), "memory.high", str(100 * MIB))
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    assert high(cgroups, top) == str(100 * MIB)
    TestCgroups.write(cgroups.path(top), "memory.high", str(120 * MIB))  # the user changes it
    assert d.stop() == 0
    assert high(cgroups, top) == str(120 * MIB)


def test_shadow_mode_reports_what_the_policy_would_have_killed(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = jobs["top"]
    cgroups.set_limit(top, 128 * MIB)
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    small = cgroups.hog(jobs["low"], mib=16)
    d = Daemon(tmp_path, cgroups.parent, "--dry-run")
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    assert high(cgroups, top) == "max" and MARK not in os.listxattr(cgroups.path(top))
    g = grow(cgroups, jobs["high"], 0.0)
    assert g.wait(timeout=60) == -signal.SIGKILL  # the kernel's pick: the biggest
    _, would = d.wait_for("would_kill", top, timeout=30)
    _, kernel = d.wait_for("kernel_kill", top, timeout=30)
    assert field(would, "pid") == str(small.pid)
    assert field(kernel, "pid") == str(g.pid) and field(kernel, "agree") == "False"
    assert small.poll() is None
    assert d.stop() == 0
    _, line = d.wait_for("daemon_stopped", cgroups.parent)
    assert field(line, "kernel_kills") == "1" and field(line, "agreed") == "0"
    (stopped,) = daemon_records(tmp_path, "daemon_stopped")  # in the journal too
    assert (stopped["kernel_kills"], stopped["agreed"]) == (1, 0)


def test_sigterm_journals_daemon_stopped_v2(
    cgroups: TestCgroups, jobs: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Issue 21 item 12 on v2: SIGTERM gives the valve back and journals daemon_stopped
    as the journal's last record."""
    top = jobs["top"]
    set_xattr(cgroups, top, "oom_delay_ms", "500")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    assert high(cgroups, top) == str(VALVE)
    assert d.stop(signal.SIGTERM) == 0
    assert high(cgroups, top) == "max"
    (stopped,) = daemon_records(tmp_path, "daemon_stopped")
    assert stopped["cgroup"] == cgroups.parent and stopped["kernel_kills"] == 0
    kinds = [r["kind"] for r in map(json.loads, (tmp_path / "journal.jsonl").open())]
    assert kinds[-1] == "daemon_stopped"


def test_host_wide_the_priority_victim_dies_before_the_kernel_acts(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """The guest's own RAM runs out (never on the machine itself: tests/v2 run only in
    the throw-away guest)."""
    assert os.environ.get("MEMCGCTL_IN_VM"), "host-wide OOMs only inside the guest"
    TestCgroups.write(cgroups.path(cgroups.parent), "memory.max", "max")
    set_xattr(cgroups, cgroups.parent, "badness", "100")  # below pytest's own (500)
    low = cgroups.make("low", limit=None)
    hi = cgroups.make("high", limit=None)
    set_xattr(cgroups, low, "badness", "100")
    set_xattr(cgroups, hi, "badness", "900")
    small = cgroups.hog(low, mib=40)
    before = vmstat_oom_kills()
    d = Daemon(tmp_path, "/", "--host-delay", "0")
    daemons.append(d)
    d.wait_for("daemon_took_over", "/", timeout=60)
    g = grow(cgroups, hi, 0.0, upto_mib=4096, chunk_kib=4096)
    _, line = d.wait_for("daemon_kill", "/", timeout=120)
    g.kill()
    assert field(line, "pid") == str(small.pid), line
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.wait(timeout=30)
    assert vmstat_oom_kills() == before, "the kernel's OOM killer acted"
    assert d.stop() == 0
