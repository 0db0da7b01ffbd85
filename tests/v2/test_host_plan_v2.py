"""The daemon's standing plan in host mode, in the guest (issue 22): with ``--host-delay
0``, while MemAvailable is below the near line (``valve.host_near``: short + (short -
critical), 16 % of MemTotal) the victim is chosen ahead at the host's polls; when the
host goes short (10 %) the plan is used if it still holds (``plan_age_ms`` on
``daemon_kill``), and otherwise the victim is chosen afresh.  Either way the policy's
victim dies, the important process (the biggest, the kernel's choice) lives, and the
kernel's OOM killer kills nobody (``/proc/vmstat oom_kill``).  Host-wide OOMs run only
here: the guest's own RAM is the host, and the VM is thrown away.

The policy's order, below the root (where pytest and the daemon sit at badness 500):
the test parent (badness 100), in it ``lower`` (50, empty: skipped, but a process
arriving there would win), ``low`` (100: the planned victim), ``mid`` (200: the next
one) and ``high`` (900: the important process and the grower).  The time in the
emulated guest (2026-12-07): 18-38 s for the first test, 12-35 s for each case of the
second."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memcgctl.daemon.valve import HostLines, host_available, host_near
from tests.realkernel import TestCgroups, wait_until
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.v2.test_daemon_v2 import MIB, field, grow, vmstat_oom_kills

__all__ = ["daemons"]
LINES = HostLines()  # the daemon's defaults: short 10 %, critical 4 %
VICTIM_MIB = 80  # its death lifts the host well above the short line again
NEXT_MIB = 60
BALLAST = Path("/dev/shm/memcgctl-host-plan")  # tmpfs: memory no process owns


def available() -> tuple[int, int]:
    """(MemAvailable + SwapFree, MemTotal + SwapTotal) in bytes, as the daemon reads them."""
    fields = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields[key] = int(rest.split()[0])
    return host_available(fields)


def short_line() -> int:
    return int(available()[1] * LINES.short)


@pytest.fixture
def host(cgroups: TestCgroups) -> Iterator[dict[str, str]]:
    """The test parent without a limit (the guest is the host here), its children
    ranked, and the ballast file removed afterwards."""
    assert os.environ.get("MEMCGCTL_IN_VM"), "host-wide OOMs only inside the guest"
    TestCgroups.write(cgroups.path(cgroups.parent), "memory.max", "max")
    set_xattr(cgroups, cgroups.parent, "badness", "100")  # below pytest's own (500)
    cgs = {}
    for name, badness in (("lower", "50"), ("low", "100"), ("mid", "200"), ("high", "900")):
        cgs[name] = cgroups.make(name, limit=None)
        set_xattr(cgroups, cgs[name], "badness", badness)
    try:
        yield cgs
    finally:
        BALLAST.unlink(missing_ok=True)


def important(cgroups: TestCgroups, cg: str, above_short: int) -> subprocess.Popen[bytes]:
    """The process the kernel would pick (by far the biggest), sized to leave about
    ``above_short`` bytes available above the short line."""
    room = available()[0] - short_line() - above_short
    assert room > 200 * MIB, f"the guest has too little memory for the test: {available()}"
    return cgroups.hog(cg, mib=room // MIB - 8)  # (the interpreter's own ~8 MiB)


def test_near_the_short_line_the_host_victim_is_chosen_ahead_and_dies_at_the_event(
    cgroups: TestCgroups, host: dict[str, str], tmp_path: Path, daemons: list[Daemon]
) -> None:
    victim = cgroups.hog(host["low"], mib=VICTIM_MIB)
    d = Daemon(tmp_path, "/", "--host-delay", "0")
    daemons.append(d)
    d.wait_for("daemon_took_over", "/", timeout=60)
    big = important(cgroups, host["high"], above_short=120 * MIB)
    assert not host_near(*available(), LINES)
    before = vmstat_oom_kills()
    # 1 MiB every 40 ms: ~2 s from the near line (60 MiB above the short one here) to
    # the short line, the daemon looking every 100 ms or sooner there; it stops 25 MiB
    # past the short line, so the victim's death ends the episode
    upto = (available()[0] - short_line()) // MIB + 25
    g = grow(cgroups, host["high"], 0.04, upto_mib=upto)
    _, kill = d.wait_for("daemon_kill", "/", timeout=120)
    assert field(kill, "pid") == str(victim.pid), kill
    assert " plan_age_ms=" in kill, "\n".join(t for _, t in d.lines)  # the plan held
    _, under = d.wait_for("under_oom", "/", timeout=5)
    assert " time=" in under  # written after the signal, stamped with the episode's start
    assert victim.wait(timeout=30) == -signal.SIGKILL
    assert g.stdout is not None and g.stdout.readline() == b"survived\n"  # all it wanted
    assert big.poll() is None
    assert vmstat_oom_kills() == before, "the kernel's OOM killer acted"
    wait_until(lambda: "oom_resolved" in d.kinds(), "the host recovered", timeout=60)
    assert d.kinds().count("daemon_kill") == 1
    assert d.stop() == 0


@pytest.mark.parametrize(
    "change", ["none", "a lower candidate came", "the victim exited", "its cgroup ranked later"]
)
def test_a_host_plan_that_no_longer_holds_is_chosen_afresh(
    cgroups: TestCgroups,
    host: dict[str, str],
    tmp_path: Path,
    daemons: list[Daemon],
    change: str,
) -> None:
    """The daemon keeps its plan near the short line; it is stopped (SIGSTOP) so that
    nothing is chosen again between the change and the event: the test changes what
    the plan rests on (the processes of a compared cgroup, the victim's life, a
    badness: the tree watch's mark), takes the host below the short line, and lets it
    go on.  With no change the plan is used; with one, the victim is chosen afresh."""
    victim = cgroups.hog(host["low"], mib=VICTIM_MIB)  # the plan's victim
    other = cgroups.hog(host["mid"], mib=NEXT_MIB)  # the next in the policy's order
    d = Daemon(tmp_path, "/", "--host-delay", "0")
    daemons.append(d)
    d.wait_for("daemon_took_over", "/", timeout=60)
    ballast = b"\x01" * (160 * MIB)  # made now: the stop lasts one copy of it to tmpfs
    big = important(cgroups, host["high"], above_short=25 * MIB)
    assert host_near(*available(), LINES)
    time.sleep(2.0)  # looks every 100 ms near the line: the plan is chosen, refreshed
    before = vmstat_oom_kills()
    d.proc.send_signal(signal.SIGSTOP)  # (a short stop: the guardian looks after 2.5 s)
    try:
        if change == "a lower candidate came":
            TestCgroups.write(cgroups.path(host["lower"]), "cgroup.procs", str(other.pid))
        elif change == "the victim exited":
            victim.kill()
            victim.wait(timeout=30)
        elif change == "its cgroup ranked later":  # (set-badness: the tree watch's mark)
            set_xattr(cgroups, host["low"], "badness", "300")
        below = available()[0] - short_line() + 25 * MIB  # to 25 MiB below the line
        assert 0 < below <= len(ballast), below
        BALLAST.write_bytes(memoryview(ballast)[:below])
    finally:
        d.proc.send_signal(signal.SIGCONT)
    _, kill = d.wait_for("daemon_kill", "/", timeout=60)
    dies, lives = (victim, other) if change == "none" else (other, victim)
    assert field(kill, "pid") == str(dies.pid), "\n".join(t for _, t in d.lines)
    assert dies.wait(timeout=30) == -signal.SIGKILL
    if change == "none":
        assert " plan_age_ms=" in kill, "\n".join(t for _, t in d.lines)
    # with a change the victim was chosen afresh (the other one died): at the event, or
    # by a refresh once the daemon went on (a plan then; its age counts from the loop's
    # clock read before the stop, so it may look older than the time since SIGCONT)
    if change not in ("none", "the victim exited"):
        assert lives.poll() is None
    assert big.poll() is None
    assert vmstat_oom_kills() == before, "the kernel's OOM killer acted"
    wait_until(lambda: "oom_resolved" in d.kinds(), "the host recovered", timeout=60)
    assert d.kinds().count("daemon_kill") == 1
    BALLAST.unlink()
    assert d.stop() == 0
