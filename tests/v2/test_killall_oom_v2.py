"""v2 side of the ``user`` counter: a kill-all of a memcg held at its memory.high valve is a
``user_kill`` (counted as ``user``); of a healthy memcg, a ``manual_kill``."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.kernel.fileio import parse_flat_keyed
from memcgctl.state.journal import Journal
from tests.realkernel import HELPERS, TestCgroups

MIB = 1 << 20


def test_v2_kill_all_at_memory_high_is_user_kill(cgroups: TestCgroups, tmp_path: Path) -> None:
    env = {"MEMCGCTL_STATE_DIR": str(tmp_path), "MEMCGCTL_CGROUP_ROOT": str(cgroups.mount)}
    runner = CliRunner()
    valve = cgroups.make("valve", limit=128 * MIB)
    cgroups.write(cgroups.path(valve), "memory.high", str(16 * MIB))
    grower = cgroups.spawn(valve, [sys.executable, str(HELPERS / "grow.py"), "1024", "64"])
    deadline = time.monotonic() + 30
    while parse_flat_keyed((cgroups.path(valve) / "memory.events").read_text())["high"] == 0:
        assert time.monotonic() < deadline, "the grower never reached memory.high"
        time.sleep(0.02)
    healthy = cgroups.make("healthy", limit=32 * MIB)
    calm = cgroups.sleeper(healthy)

    r = runner.invoke(cli, ["kill-all", valve, "--json"], env=env)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["under_oom"], doc["recorded_as"]) == (True, "user_kill")
    assert grower.wait(timeout=10) == -signal.SIGKILL
    r = runner.invoke(cli, ["kill-all", healthy, "--json"], env=env)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["under_oom"], doc["recorded_as"]) == (False, "manual_kill")
    assert calm.wait(timeout=10) == -signal.SIGKILL

    kinds = {r.get("pid"): r["kind"] for r in Journal(tmp_path).read() if "pid" in r}
    assert kinds[grower.pid] == "user_kill" and kinds[calm.pid] == "manual_kill"
    r = runner.invoke(cli, ["counters", valve, healthy, "--json"], env=env)
    assert r.exit_code == 0, r.output
    users = [c["by_cause"]["user"] for c in json.loads(r.stdout)["cgroups"]]
    assert users == [1, 0]


def test_v2_run_sets_memory_max_and_high_before_cmd(cgroups: TestCgroups, tmp_path: Path) -> None:
    import os
    import subprocess

    job = cgroups.parent + "/runjob"
    d = cgroups.path(job)
    p = subprocess.run(
        [
            sys.executable, "-m", "memcgctl", "run", "-c", job, "--memory-max", "48M",
            "--memory-high", "32M", "--", "sh", "-c", f"cat {d}/memory.max {d}/memory.high",
        ],
        cwd=Path(__file__).resolve().parent.parent.parent,
        env={**os.environ, "MEMCGCTL_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == [str(48 * MIB), str(32 * MIB)]
