"""Inherited badness and cgroup rules on cgroup v2, in the guest kernel: the daemon's
OOM valve, a parent's 900 passed on to the workers it forks after set-badness, and a
rule-matched cgroup re-created (as a restarting unit's is) that gets its badness back
before its next OOM.  Success as elsewhere: the policy's victim died and the kernel's
OOM killer killed nobody (memory.events oom_kill 0)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from tests.realkernel import HELPERS, TestCgroups, journaled, wait_until
from tests.test_daemon_kernel import Daemon, daemons, set_xattr
from tests.test_rules_kernel import cli, fork_worker, processes, read_grown, spawn_family, xattr
from tests.v2.test_oom_v2 import events_file

__all__ = ["daemons"]
LIMIT = 256 << 20


def no_kernel_kill(tc: TestCgroups, cg: str) -> None:
    ev = events_file(tc, cg, local=False)
    assert ev["oom_kill"] == 0, ev


def test_v2_workers_inherit_their_parents_badness_and_survive_the_oom(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    cg = cgroups.make("family", limit=LIMIT)
    set_xattr(cgroups, cg, "oom_delay_ms", "0")
    plain = cgroups.hog(cg, mib=40)  # default badness, never the biggest
    parent = spawn_family(cgroups, cg)
    r = cli(tmp_path, "set-badness", "--pid", str(parent.pid), "900")
    assert r.returncode == 0, r.stderr
    fork_worker(parent, 80, 80)
    holder = read_grown(parent)
    got = processes(tmp_path, cg)
    assert (got[holder]["badness_source"], got[holder]["badness_from"]) == (
        "inherited",
        parent.pid,
    )
    r = cli(tmp_path, "predict-victim", cg, "--policy", "kernel", "--json")
    assert json.loads(r.stdout)["victim"]["pid"] == holder
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", cg, timeout=60)
    fork_worker(parent, 0, 120)  # 40 + 80 + 120 MiB and the interpreters: past the valve
    assert plain.wait(timeout=120) == -signal.SIGKILL
    grower = read_grown(parent)
    rec = journaled(tmp_path, "daemon_kill", plain.pid, timeout=60)
    assert (rec["badness"], rec["badness_source"]) == (500, "default")
    no_kernel_kill(cgroups, cg)
    assert parent.poll() is None
    alive = processes(tmp_path, cg)
    assert {alive[p]["badness_source"] for p in (holder, grower)} == {"inherited"}
    assert d.stop() == 0


def test_v2_a_recreated_cgroup_gets_its_rule_back_before_its_next_oom(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    top = cgroups.make("jobs", limit=LIMIT)
    low = cgroups.make("jobs/low", limit=None)
    high = cgroups.make("jobs/high", limit=None)
    rules = tmp_path / "rules.d"
    rules.mkdir(mode=0o755)
    (rules / "20-jobs.toml").write_text(
        f'[[rule]]\nname = "jobs-managed"\ncgroup = "{top}"\noom_delay = "0"\n\n'
        f'[[rule]]\nname = "low-first"\ncgroup = "{top}/low"\nbadness = 100\n\n'
        f'[[rule]]\nname = "high-last"\ncgroup = "{high}"\nbadness = 900\n'
    )
    state = tmp_path / "state"
    d = Daemon(state, cgroups.parent, "--rules", str(rules))
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    assert xattr(cgroups, low, "badness") == "100"
    assert xattr(cgroups, high, "badness_rule") == "high-last"
    cgroups.path(low).rmdir()
    cgroups.make("jobs/low", limit=None)
    wait_until(lambda: xattr(cgroups, low, "badness") == "100" or None, "the rule re-applied", 60)
    big = cgroups.hog(high, mib=150)  # the kernel would kill this one
    g = cgroups.spawn(low, [sys.executable, str(HELPERS / "grow.py"), "1024", "400", "0.002"])
    assert g.wait(timeout=120) == -signal.SIGKILL
    _, line = d.wait_for("daemon_kill", top, timeout=60)
    assert f"pid={g.pid}" in line
    assert big.poll() is None
    no_kernel_kill(cgroups, top)
    assert d.stop() == 0
