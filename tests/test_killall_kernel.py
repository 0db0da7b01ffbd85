"""kill-all against the real kernel, only inside our own test cgroups."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.state.journal import Journal
from tests.realkernel import HELPERS, TestCgroups, wait_until

FREEZER = Path("/sys/fs/cgroup/freezer")

# A shell that starts N sleepers in its cgroup, then becomes a sleeper itself.
_SLEEPERS = "for i in $(seq {n}); do sleep 3600 & done; echo ready; exec sleep 3600"
# A shell that keeps forking short-lived children (bounded: each exits at once).
_FORK_LOOP = "echo ready; while :; do /bin/true; done"


def _sleepers(tc: TestCgroups, cg: str, n: int, prefix: str = "") -> subprocess.Popen[bytes]:
    return tc.spawn(cg, ["/bin/sh", "-c", prefix + _SLEEPERS.format(n=n)])


def _fork_loop(tc: TestCgroups, cg: str, prefix: str = "") -> subprocess.Popen[bytes]:
    return tc.spawn(cg, ["/bin/sh", "-c", prefix + _FORK_LOOP])


def _invoke(runner: CliRunner, tc: TestCgroups, state: Path, *args: str) -> tuple[int, str]:
    env = {"MEMCGCTL_STATE_DIR": str(state), "MEMCGCTL_CGROUP_ROOT": str(tc.mount)}
    r = runner.invoke(cli, ["kill-all", *args], env=env)
    return r.exit_code, r.output


def _assert_stays_empty(tc: TestCgroups, cg: str) -> None:
    assert tc.subtree_pids(cg) == []
    # Not a synchronisation: a window for a fork that raced with the kill to show up.
    time.sleep(0.3)
    assert tc.subtree_pids(cg) == []


def test_v1_kills_200_sleepers_and_fork_loop_spares_bystander(
    cgroups: TestCgroups, runner: CliRunner, tmp_path: Path
) -> None:
    job = cgroups.make("job", limit=128 << 20)
    for rel in ("job/a", "job/a/deep", "job/b", "job/c"):
        cgroups.make(rel, limit=64 << 20)
    for rel in ("job/a", "job/a/deep", "job/b", "job/c"):
        _sleepers(cgroups, f"{cgroups.parent}/{rel}", 50)
    loop = _fork_loop(cgroups, f"{cgroups.parent}/job/b")
    bystander = cgroups.sleeper(cgroups.make("bystander", limit=16 << 20))
    before = set(cgroups.subtree_pids(job))
    assert len(before) >= 204

    code, output = _invoke(runner, cgroups, tmp_path, job, "--json", "--timeout", "20")
    assert code == 0, output
    doc = json.loads(output)
    assert doc["empty"] is True and doc["survivors"] == []
    assert doc["mechanism"] == "procs"  # no freezer cgroup mirrors this memcg
    killed = {k["pid"] for k in doc["killed"]}
    assert before - killed <= {p for p in before if not Path(f"/proc/{p}").exists()}
    assert loop.pid in killed
    _assert_stays_empty(cgroups, job)
    assert bystander.poll() is None, "the bystander in a sibling cgroup must survive"
    assert cgroups.pids(f"{cgroups.parent}/bystander") == [bystander.pid]

    records = [r for r in Journal(tmp_path).read() if r.get("kind") == "manual_kill"]
    assert {r.get("pid") for r in records} == killed
    rec = next(r for r in records if r.get("pid") == loop.pid)
    assert rec["cgroup"] == f"{cgroups.parent}/job/b"
    assert rec["source"] == "journal" and rec.get("by") == "kill-all"
    assert rec.get("mechanism") == "procs" and rec.get("comm") == "sh"


@pytest.mark.parametrize(
    ("mechanism", "expected"), [("auto", "cgroup.kill"), ("freeze", "cgroup.freeze")]
)
def test_v2_kill_and_freeze_paths_with_fork_loop(
    unified_cgroups: TestCgroups,
    runner: CliRunner,
    tmp_path: Path,
    mechanism: str,
    expected: str,
) -> None:
    tc = unified_cgroups
    job = tc.make("job", limit=None)
    tc.make("job/a", limit=None)
    tc.make("job/b", limit=None)
    _sleepers(tc, f"{tc.parent}/job/a", 40)
    _sleepers(tc, f"{tc.parent}/job/b", 40)
    loop = _fork_loop(tc, f"{tc.parent}/job/b")
    bystander = tc.sleeper(tc.make("bystander", limit=None))

    code, output = _invoke(
        runner, tc, tmp_path, job, "--json", "--mechanism", mechanism, "--timeout", "20"
    )
    assert code == 0, output
    doc = json.loads(output)
    assert doc["mechanism"] == expected and doc["empty"] is True
    assert doc["hierarchy"]["version"] == 2
    assert loop.pid in {k["pid"] for k in doc["killed"]}
    assert len(doc["killed"]) >= 82
    _assert_stays_empty(tc, job)
    if expected == "cgroup.freeze":
        assert (tc.path(job) / "cgroup.freeze").read_text().strip() == "0"  # thawed again
    assert bystander.poll() is None
    records = [r for r in Journal(tmp_path).read() if r.get("kind") == "manual_kill"]
    assert {r.get("mechanism") for r in records} == {expected}


def test_v2_term_with_grace_escalates(
    unified_cgroups: TestCgroups, runner: CliRunner, tmp_path: Path
) -> None:
    tc = unified_cgroups
    job = tc.make("job", limit=None)
    polite = tc.sleeper(job)
    stubborn = tc.spawn(job, ["/bin/sh", "-c", "trap '' TERM; echo ready; exec sleep 3600"])
    code, output = _invoke(
        runner, tc, tmp_path, job, "--json", "--signal", "TERM", "--grace", "0.3"
    )
    assert code == 0, output
    doc = json.loads(output)
    assert doc["phases"] == [
        {"signal": "SIGTERM", "mechanism": "cgroup.freeze"},
        {"signal": "SIGKILL", "mechanism": "cgroup.kill"},
    ]
    by_pid = {k["pid"]: k for k in doc["killed"]}
    assert by_pid[polite.pid]["signal"] == "SIGTERM"
    assert by_pid[stubborn.pid]["mechanism"] == "cgroup.kill"
    assert tc.subtree_pids(job) == []


def test_timeout_names_the_survivor(
    cgroups: TestCgroups, runner: CliRunner, tmp_path: Path
) -> None:
    """An honest "cannot die in time": a process that ignores SIGTERM, --signal TERM
    and no --grace, so nothing escalates to SIGKILL."""
    job = cgroups.make("job", limit=16 << 20)
    stubborn = cgroups.spawn(job, ["/bin/sh", "-c", "trap '' TERM; echo ready; exec sleep 3600"])
    code, output = _invoke(runner, cgroups, tmp_path, job, "--signal", "TERM", "--timeout", "0.5")
    assert code == 1, output
    assert f"{stubborn.pid} (sleep) in {job}" in output
    assert "not empty after 0.5s" in output
    assert stubborn.poll() is None
    assert not [r for r in Journal(tmp_path).read() if r.get("pid") == stubborn.pid]


def test_v1_freezer_path_when_it_mirrors_the_memcg(
    cgroups: TestCgroups, runner: CliRunner, tmp_path: Path
) -> None:
    if not (FREEZER / "freezer.state").exists() and not (FREEZER / "cgroup.procs").exists():
        pytest.skip("no v1 freezer hierarchy at /sys/fs/cgroup/freezer")
    fz = TestCgroups(FREEZER, name=cgroups.name)  # the same test parent on the freezer
    try:
        job = cgroups.make("job", limit=64 << 20)
        cgroups.make("job/a", limit=64 << 20)
        fz.make("job/a", limit=None)
        join = f'echo $$ > "{fz.path(job)}/a/cgroup.procs" && '
        _sleepers(cgroups, f"{job}/a", 30, prefix=join)
        _fork_loop(cgroups, f"{job}/a", prefix=join)
        # each helper joins the memcg first and the freezer cgroup second: wait until the
        # freezer holds every process of the memcg, as the mechanism requires
        wait_until(
            lambda: not set(cgroups.subtree_pids(job)) - set(fz.subtree_pids(job)),
            "the helpers to join the freezer cgroup",
            timeout=10,
        )
        code, output = _invoke(runner, cgroups, tmp_path, job, "--json", "--timeout", "20")
        assert code == 0, output
        doc = json.loads(output)
        assert doc["mechanism"] == "freezer" and doc["empty"] is True
        _assert_stays_empty(cgroups, job)
        assert (fz.path(job) / "freezer.state").read_text().strip() == "THAWED"

        # one process in the memcg that the freezer cgroup does not hold: not used
        cgroups.sleeper(job)
        _sleepers(cgroups, f"{job}/a", 3, prefix=join)
        code, output = _invoke(runner, cgroups, tmp_path, job, "--json")
        assert code == 0, output
        assert json.loads(output)["mechanism"] == "procs"
        assert cgroups.subtree_pids(job) == []
    finally:
        fz.cleanup()


def test_dry_run_signals_nothing(cgroups: TestCgroups, runner: CliRunner, tmp_path: Path) -> None:
    job = cgroups.make("job", limit=16 << 20)
    p = cgroups.sleeper(job)
    code, output = _invoke(runner, cgroups, tmp_path, job, "--dry-run", "--json")
    assert code == 0, output
    doc = json.loads(output)
    assert [t["pid"] for t in doc["would_signal"]] == [p.pid]
    assert doc["mechanism"] == "procs"
    assert p.poll() is None and cgroups.pids(job) == [p.pid]


@pytest.mark.parametrize("unified", [False, True])
def test_real_root_is_refused_in_dry_run(
    memory_mount: Path, runner: CliRunner, tmp_path: Path, unified: bool
) -> None:
    args = ["--cgroup-root", "/sys/fs/cgroup/unified"] if unified else []
    if unified and not Path("/sys/fs/cgroup/unified/cgroup.procs").exists():
        pytest.skip("no cgroup2 hierarchy at /sys/fs/cgroup/unified")
    r = runner.invoke(
        cli, [*args, "kill-all", "/", "--dry-run"], env={"MEMCGCTL_STATE_DIR": str(tmp_path)}
    )
    assert r.exit_code == 2
    assert "refusing to kill the whole hierarchy" in r.output


def test_big_victim_is_reaped_with_process_mrelease_path(
    cgroups: TestCgroups, runner: CliRunner, tmp_path: Path
) -> None:
    """A victim above MRELEASE_MIN_RSS_KB goes through process_mrelease (best effort);
    the kill must work the same."""
    job = cgroups.make("job", limit=128 << 20)
    hog = cgroups.hog(job, mib=48)
    code, output = _invoke(runner, cgroups, tmp_path, job, "--json")
    assert code == 0, output
    assert [k["pid"] for k in json.loads(output)["killed"]] == [hog.pid]
    assert cgroups.subtree_pids(job) == []


def _counters_user(runner: CliRunner, tc: TestCgroups, state: Path, cg: str) -> int:
    env = {"MEMCGCTL_STATE_DIR": str(state), "MEMCGCTL_CGROUP_ROOT": str(tc.mount)}
    r = runner.invoke(cli, ["counters", cg, "--json"], env=env)
    assert r.exit_code == 0, r.output
    return int(json.loads(r.stdout)["cgroups"][0]["by_cause"]["user"])


def test_v1_kill_all_under_oom_is_user_kill_healthy_is_manual_kill(
    cgroups: TestCgroups, runner: CliRunner, tmp_path: Path
) -> None:
    """A kill-all of a memcg paused in OOM (v1 under_oom) counts as ``user``;
    the same kill-all of a healthy memcg is a ``manual_kill``, shown by events, counted
    nowhere."""
    healthy = cgroups.make("healthy", limit=32 << 20)
    calm = cgroups.sleeper(healthy)
    stuck = cgroups.make("stuck", limit=16 << 20)
    # the kernel's OOM killer off for this memcg only: the grower sleeps in the OOM
    cgroups.write(cgroups.path(stuck), "memory.oom_control", "1")
    grower = cgroups.spawn(stuck, [sys.executable, str(HELPERS / "grow.py"), "1024", "64"])
    deadline = time.monotonic() + 15
    while "under_oom 1" not in (cgroups.path(stuck) / "memory.oom_control").read_text():
        assert time.monotonic() < deadline, "the grower never reached its limit"
        time.sleep(0.02)

    code, output = _invoke(runner, cgroups, tmp_path, stuck, "--json")
    assert code == 0, output
    doc = json.loads(output)
    assert doc["under_oom"] is True and doc["recorded_as"] == "user_kill"
    assert grower.wait(timeout=10) == -signal.SIGKILL
    code, output = _invoke(runner, cgroups, tmp_path, healthy, "--json")
    assert code == 0, output
    doc = json.loads(output)
    assert doc["under_oom"] is False and doc["recorded_as"] == "manual_kill"
    assert calm.wait(timeout=10) == -signal.SIGKILL

    kinds = {r.get("pid"): r["kind"] for r in Journal(tmp_path).read() if "pid" in r}
    assert kinds[grower.pid] == "user_kill" and kinds[calm.pid] == "manual_kill"
    assert _counters_user(runner, cgroups, tmp_path, stuck) == 1
    assert _counters_user(runner, cgroups, tmp_path, healthy) == 0
    env = {"MEMCGCTL_STATE_DIR": str(tmp_path), "MEMCGCTL_CGROUP_ROOT": str(cgroups.mount)}
    r = runner.invoke(cli, ["events", healthy, "--json"], env=env)
    assert r.exit_code == 0, r.output
    shown = [e for e in json.loads(r.stdout)["events"] if e["kind"] == "manual_kill"]
    assert [e["pid"] for e in shown] == [calm.pid]
