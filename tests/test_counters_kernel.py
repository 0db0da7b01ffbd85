"""Kill counters against real kernel OOM kills (cgroup v1 memory controller).

Other engineers trigger OOMs on this machine at the same time: every assertion is
about our own test memcgs (the kernel's per-cgroup counter and ``by_cause`` of it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.state import totals
from tests.promtext import parse_exposition
from tests.realkernel import HELPERS, TestCgroups

pytestmark = pytest.mark.kernel

CAP = {"MEMCGCTL_JOURNAL_MAX_BYTES": "4K"}  # rotates at almost every append


def _counters(state: Path, *args: str) -> Any:
    r = CliRunner().invoke(cli, ["--state-dir", str(state), "counters", *args], env=CAP)
    assert r.exit_code == 0, r.output
    return r.stdout


def _kill_one(cgroups: TestCgroups, cg: str) -> None:
    g = cgroups.spawn(cg, [sys.executable, str(HELPERS / "grow.py"), "1024", "200", "0"])
    assert g.wait(timeout=30) == -9


def _memcg(state: Path, cg: str) -> tuple[int, int, bool]:
    c = json.loads(_counters(state, cg, "--json"))["cgroups"][0]
    return c["local"]["oom_kill"], c["by_cause"]["memcg"], c["complete"]


def test_oom_storm_every_kill_counted_and_never_decreasing(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    """14 memcg OOM kills in quick succession (the kernel rate-limits its report to
    10 per 5 s, so some kills leave only a "Killed process" line without a cgroup):
    by_cause.memcg equals the kernel's counter.  Then more kills with a 4 KiB journal
    cap, counters read after each: never lower than before, equal to the kernel's."""
    state = tmp_path / "state"
    cg = cgroups.make("storm", limit=32 << 20)
    for _ in range(14):
        _kill_one(cgroups, cg)
    kernel, memcg, complete = _memcg(state, cg)
    assert kernel == 14
    assert memcg == 14 and complete is True
    attributed = (totals.load(state) or {}).get("attributed", {}).get(cg, 0)
    print(f"storm: {attributed} of 14 kills attributed from the kernel's counter")
    readings = [memcg]
    for _ in range(6):
        _kill_one(cgroups, cg)
        kernel, memcg, complete = _memcg(state, cg)
        assert memcg == kernel and complete is True
        readings.append(memcg)
    assert readings == sorted(readings) and readings[-1] == 20
    assert (state / "journal.jsonl.1").exists()  # the journal did rotate
    fams = parse_exposition(_counters(state, cg, "--format", "prometheus"))
    assert fams["memcgctl_kernel_oom_kills"][(cg, "local")] == 20
    assert fams["memcgctl_oom_kills"][(cg, "memcg")] == 20
