"""``set-limit``: a limit lowered below the usage makes room by policy, not by the
kernel's heuristic inside the write (issue 21 item 13).  Bad input on fixture trees;
the real shrink on the v1 kernel here (v2: tests/v2/test_delegation_v2.py)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from tests.fakehost import FakeHost
from tests.realkernel import TestCgroups, journaled
from tests.test_daemon_kernel import oom_control, run_cli, set_xattr

MIB = 1 << 20


@pytest.mark.parametrize(
    ("size", "what"),
    [
        ("lots", "is not a size"),
        ("1e3", "is not a size"),
        ("0", "must be more than 0"),
        ("12X", "is not a size"),
        ("99999999T", "too large"),
    ],
)
def test_bad_sizes_are_one_clear_line_and_exit_2(fake_v2: FakeHost, size: str, what: str) -> None:
    fake_v2.cgroup("/jobs", limit=256 * MIB, usage=10 * MIB)
    r = CliRunner().invoke(cli, ["set-limit", "/jobs", size], env=fake_v2.cli_env())
    assert r.exit_code == 2, r.output
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and what in r.stderr
    assert (fake_v2.path("/jobs") / "memory.max").read_text() == f"{256 * MIB}\n"


def test_the_root_and_a_missing_cgroup_are_refused(fake_v2: FakeHost) -> None:
    r = CliRunner().invoke(cli, ["set-limit", "/", "1G"], env=fake_v2.cli_env())
    assert r.exit_code == 2 and "hierarchy root" in r.stderr
    r = CliRunner().invoke(cli, ["set-limit", "/nope", "1G"], env=fake_v2.cli_env())
    assert r.exit_code == 3 and len(r.stderr.splitlines()) == 1


def test_above_the_usage_the_limit_is_just_written(fake_v2: FakeHost) -> None:
    fake_v2.cgroup("/jobs", limit=256 * MIB, usage=10 * MIB)
    fake_v2.process(10, "/jobs", rss_anon_kb=10_000)
    limit_file = fake_v2.path("/jobs") / "memory.max"
    limit_file.write_text("")  # (a fixture file: a write does not replace it as cgroupfs does)
    r = CliRunner().invoke(cli, ["set-limit", "/jobs", "64M", "--json"], env=fake_v2.cli_env())
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["written"], doc["killed"], doc["limit_bytes"]) == (True, [], 64 * MIB)
    assert limit_file.read_text() == f"{64 * MIB}"
    limit_file.write_text("")
    r = CliRunner().invoke(cli, ["set-limit", "/jobs", "max"], env=fake_v2.cli_env())
    assert r.exit_code == 0 and limit_file.read_text() == "max"


def test_dry_run_names_the_policys_victims_and_changes_nothing(fake_v2: FakeHost) -> None:
    fake_v2.cgroup("/jobs", limit=256 * MIB, usage=180 * MIB)
    fake_v2.cgroup("/jobs/low", badness=100, usage=40 * MIB)
    fake_v2.cgroup("/jobs/mid", badness=500, usage=40 * MIB)
    fake_v2.cgroup("/jobs/high", badness=900, usage=100 * MIB)
    fake_v2.process(10, "/jobs/low", rss_anon_kb=40 << 10)
    fake_v2.process(11, "/jobs/mid", rss_anon_kb=40 << 10)
    fake_v2.process(12, "/jobs/high", rss_anon_kb=100 << 10)
    env = fake_v2.cli_env()
    r = CliRunner().invoke(cli, ["set-limit", "/jobs", "120M", "-n", "--json"], env=env)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    # 60M too much: the badness-100 and -500 processes, not the kernel's biggest
    assert [k["pid"] for k in doc["would_kill"]] == [10, 11] and doc["written"] is False
    r = CliRunner().invoke(cli, ["set-limit", "/jobs", "120M", "--dry-run"], env=env)
    assert r.exit_code == 0 and "would kill 2 process(es)" in r.stdout
    assert (fake_v2.path("/jobs") / "memory.max").read_text() == f"{256 * MIB}\n"


@pytest.mark.kernel
def test_v1_shrink_below_usage_kills_the_policys_victim_not_the_kernels(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    top = cgroups.make("jobs", limit=220 * MIB)
    low = cgroups.make("jobs/low", limit=None)
    mid = cgroups.make("jobs/mid", limit=None)
    high = cgroups.make("jobs/high", limit=None)
    for cg, b in ((low, "100"), (mid, "500"), (high, "900")):
        set_xattr(cgroups, cg, "badness", b)
    victim = cgroups.hog(low, mib=40)
    kept = cgroups.hog(mid, mib=40)
    big = cgroups.hog(high, mib=70)  # the biggest: the kernel's pick
    usage = int((cgroups.path(top) / "memory.usage_in_bytes").read_text())
    target = usage - 20 * MIB  # the 40M victim makes room, the next one is not needed
    r = run_cli(tmp_path, "set-limit", top, str(target), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [k["pid"] for k in doc["killed"]] == [victim.pid] and doc["written"]
    assert victim.wait(timeout=15) == -signal.SIGKILL
    assert kept.poll() is None and big.poll() is None
    limit = int((cgroups.path(top) / "memory.limit_in_bytes").read_text())
    assert limit == target // 4096 * 4096
    for cg in (top, low, mid, high):  # the kernel's OOM killer did not move
        assert oom_control(cgroups, cg)["oom_kill"] == 0
    assert journaled(tmp_path, "manual_kill", victim.pid)["by"] == "set-limit"


@pytest.mark.kernel
def test_v1_nothing_killable_leaves_the_limit_and_exits_1(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    top = cgroups.make("jobs", limit=128 * MIB)
    keep = cgroups.make("jobs/keep", limit=None)
    set_xattr(cgroups, keep, "badness", "1000")
    p = cgroups.hog(keep, mib=40)
    r = run_cli(tmp_path, "set-limit", top, "16M")
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.splitlines()) == 1 and "nothing killable" in r.stderr
    assert p.poll() is None
    assert int((cgroups.path(top) / "memory.limit_in_bytes").read_text()) == 128 * MIB
