"""The daemon's standing plan against the real v1 kernel (issue 22): a delay-0 memcg that
comes near its limit before it runs out has its victim chosen ahead; at the OOM the
plan is used (``plan_age_ms``) and the policy's victim dies, the kernel kills nobody."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest

from tests.realkernel import HELPERS, TestCgroups, journaled
from tests.test_daemon_kernel import Daemon, daemons, oom_control, set_xattr  # noqa: F401

pytestmark = pytest.mark.kernel


def test_near_its_limit_the_victim_is_chosen_ahead_and_dies_at_the_oom(
    cgroups: TestCgroups,
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    top = cgroups.make("jobs", limit=96 << 20)  # set before anything allocates there
    low = cgroups.make("jobs/low", limit=None)
    high = cgroups.make("jobs/high", limit=None)
    set_xattr(cgroups, low, "badness", "100")
    set_xattr(cgroups, high, "badness", "900")
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    victim = cgroups.hog(low, mib=20)  # the policy's victim (the kernel's: the grower)
    d = Daemon(tmp_path, cgroups.parent, "--no-guardian")
    daemons.append(d)
    d.wait_for("daemon_took_over", top)
    # 1 MiB every 40 ms: the memcg spends ~0.5 s within an eighth of its limit (the
    # rescans, every 200 ms, see it near), then runs out; the victim's 20 MiB gone,
    # the grower reaches its 70 MiB
    grower = cgroups.spawn(high, [sys.executable, str(HELPERS / "grow.py"), "1024", "70", "0.04"])
    assert victim.wait(timeout=30) == -signal.SIGKILL
    _, under = d.wait_for("under_oom", top)
    _, kill = d.wait_for("daemon_kill", top)
    assert f"pid={victim.pid}" in kill
    assert " plan_age_ms=" in kill, "\n".join(t for _, t in d.lines)  # the plan held
    assert " time=" in under  # written after the signal, stamped with the episode's start
    assert grower.stdout is not None and grower.stdout.readline() == b"survived\n"
    for cg in (top, low, high):
        assert oom_control(cgroups, cg)["oom_kill"] == 0  # the kernel killed nobody
    d.wait_for("oom_resolved", top)
    assert d.stop() == 0
    # the journal: user_kill (at the signal) is appended before under_oom now, but the
    # times keep the episode's order, which the readers sort by
    killed = journaled(tmp_path, "user_kill", victim.pid)
    recorded = journaled(tmp_path, "daemon_kill", victim.pid)
    records = [json.loads(x) for x in (tmp_path / "journal.jsonl").read_text().splitlines()]
    began = next(r for r in records if r["kind"] == "under_oom" and r["cgroup"] == top)
    assert began["time"] < killed["time"] <= recorded["time"]
