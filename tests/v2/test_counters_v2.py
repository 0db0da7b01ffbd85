"""Kill counters on cgroup v2 (in the guest): memory.events.local oom_kill and
by_cause.memcg agree after an OOM storm whose reports the kernel rate-limited, and
stay non-decreasing across rotations of a 4 KiB journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memcgctl.state import totals
from tests.promtext import parse_exposition
from tests.realkernel import TestCgroups
from tests.test_counters_kernel import _counters, _kill_one
from tests.test_events_kernel import test_kernel_kill_in_a_memcg_named_not_ascii as _named
from tests.test_hostile import (
    test_counters_prometheus_is_utf8_when_nobody_names_a_cgroup_with_byte_ff as _byte_ff,
)

MIB = 1 << 20


def test_v2_oom_storm_counted_from_memory_events_local(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    parent = cgroups.make("app", limit=None)
    cg = cgroups.make("app/storm", limit=32 * MIB)
    for _ in range(14):
        _kill_one(cgroups, cg)
    doc = json.loads(_counters(state, cg, parent, "--json"))
    by = {c["cgroup"]: c for c in doc["cgroups"]}
    assert by[cg]["local"]["oom_kill"] == 14
    assert by[cg]["by_cause"]["memcg"] == 14 and by[cg]["complete"] is True
    assert by[parent]["hierarchical"]["oom_kill"] == 14
    assert by[parent]["by_cause"]["memcg"] == 14 and by[parent]["complete"] is True
    attributed = (totals.load(state) or {}).get("attributed", {}).get(cg, 0)
    print(f"v2 storm: {attributed} of 14 kills attributed from memory.events.local")
    readings = [14]
    for _ in range(4):
        _kill_one(cgroups, cg)
        c = json.loads(_counters(state, cg, "--json"))["cgroups"][0]
        assert c["by_cause"]["memcg"] == c["local"]["oom_kill"] and c["complete"] is True
        readings.append(c["by_cause"]["memcg"])
    assert readings == sorted(readings) and readings[-1] == 18
    fams = parse_exposition(_counters(state, cg, parent, "--format", "prometheus"))
    assert fams["memcgctl_kernel_oom_kills"][(cg, "local")] == 18
    assert fams["memcgctl_kernel_oom_kills"][(parent, "hierarchical")] == 18
    assert fams["memcgctl_oom_kills"][(parent, "memcg")] == 18


@pytest.mark.parametrize("name", ["café", "x\udcffy"], ids=["utf8", "byte-ff"])
def test_v2_kernel_kill_in_a_memcg_named_not_ascii(
    cgroups: TestCgroups, tmp_path: Path, name: str
) -> None:
    """Issue 21 item 9 on v2: the kill is in café (the kmsg escapes are UTF-8 bytes)."""
    _named(cgroups, tmp_path, name)


def test_v2_prometheus_utf8_when_nobody_names_a_cgroup_with_byte_ff(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    """Issue 21 item 8 on v2: nobody's delegated subtree, a name with the byte 0xff."""
    _byte_ff(cgroups, tmp_path)
