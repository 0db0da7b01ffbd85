"""The daemon's cgroup v2 path against the guest kernel: a PSI trigger on the managed
memcg's memory.pressure; pressure (memory.high throttling) that lasts longer than the
OOM delay makes the daemon kill the priority victim before the kernel would act."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from tests.realkernel import TestCgroups
from tests.test_daemon_kernel import Daemon, daemons, grower, set_xattr
from tests.v2.test_oom_v2 import events_file

__all__ = ["daemons"]
MIB = 1 << 20
DELAY_MS = 800


def test_psi_pressure_kills_the_priority_victim_not_the_biggest(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = cgroups.make("jobs", limit=160 * MIB)
    low = cgroups.make("jobs/low", limit=None)
    high = cgroups.make("jobs/high", limit=None)
    set_xattr(cgroups, low, "badness", "100")
    set_xattr(cgroups, high, "badness", "900")
    set_xattr(cgroups, top, "oom_delay_ms", str(DELAY_MS))
    big = cgroups.hog(high, mib=48)  # the kernel's choice: the biggest process
    d = Daemon(tmp_path, cgroups.parent, "--psi-stall", "50ms", "--psi-window", "1s")
    daemons.append(d)
    _, line = d.wait_for("daemon_took_over", top, timeout=90)
    assert "mode=psi" in line
    g = grower(cgroups, low, upto_mib=120)
    # throttled, not killed: memory.high stalls the grower in reclaim (PSI "some").
    # Set once it runs, so its start-up is never what stalls.
    TestCgroups.write(cgroups.path(low), "memory.high", str(40 * MIB))
    _, line = d.wait_for("pressure", top, timeout=90)
    _, line = d.wait_for("daemon_kill", top, timeout=90)
    assert f"pid={g.pid}" in line and f"victim_cgroup={low}" in line, line
    waited = int(line.split("waited_ms=")[1].split()[0])
    assert waited >= DELAY_MS, line
    assert g.wait(timeout=30) == -signal.SIGKILL
    assert big.poll() is None  # the biggest (high badness) process survives
    # the kernel killed nobody: the daemon acted before memory.max
    assert events_file(cgroups, top, local=False)["oom_kill"] == 0
    records = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    assert any(
        r["kind"] == "user_kill" and r["pid"] == g.pid and r["by"] == "daemon" for r in records
    )
    assert d.stop() == 0
    # v2 changes nothing on the memcg: no oom_kill_disable, no ownership mark
    assert "trusted.memcgctl.daemon_prev" not in os.listxattr(cgroups.path(top))
