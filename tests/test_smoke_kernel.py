from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from memcgctl.cli import cli
from tests.realkernel import TestCgroups


def test_tree_and_ps_see_real_memcg(
    cgroups: TestCgroups, runner: CliRunner, tmp_path: object
) -> None:
    cg = cgroups.make("job", limit=64 << 20)
    hog = cgroups.hog(cg, mib=8)
    env = {"MEMCGCTL_STATE_DIR": str(tmp_path)}
    r = runner.invoke(cli, ["tree", cgroups.parent, "--json"], env=env)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    by = {c["cgroup"]: c for c in doc["cgroups"]}
    assert by[cg]["limit_bytes"] == 64 << 20
    assert by[cg]["nr_tasks"] == 1
    assert by[cg]["usage_bytes"] >= 8 << 20
    r = runner.invoke(cli, ["ps", cg, "--json"], env=env)
    procs = json.loads(r.output)["processes"]
    assert [p["pid"] for p in procs] == [hog.pid]
    assert procs[0]["rss_kb"] >= 8 << 10
    assert procs[0]["oom_score"] == int(Path(f"/proc/{hog.pid}/oom_score").read_text())
    assert os.path.isdir(cgroups.path(cg))
