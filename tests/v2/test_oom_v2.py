"""What only cgroup v2 has: memory.max OOM kills with memory.events(.local) counters,
memory.events POLLPRI notifications in ``events --follow``, and memory.oom.group group
kills that predict-victim foresees."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.kernel.fileio import parse_flat_keyed
from tests.realkernel import HELPERS, TestCgroups, wait_until
from tests.test_events_kernel import Follow, cli_json, follow, grower
from tests.test_predict_kernel import KILLED, Kmsg

__all__ = ["follow"]
MIB = 1 << 20


def events_file(tc: TestCgroups, cg: str, local: bool) -> dict[str, int]:
    name = "memory.events.local" if local else "memory.events"
    return parse_flat_keyed((tc.path(cg) / name).read_text())


def test_memory_max_kill_counters_history_and_follow(
    cgroups: TestCgroups, follow: Callable[[str], Follow], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    parent = cgroups.make("app", limit=None)
    cg = cgroups.make("app/job", limit=32 * MIB)
    f = follow(cgroups.parent)
    g = grower(cgroups, cg)
    comm = Path(f"/proc/{g.pid}/comm").read_text().strip()
    assert g.wait(timeout=60) == -signal.SIGKILL
    # the kernel log (kmsg) names the victim
    ev = f.wait_for(lambda e: e["kind"] == "oom_kill" and e.get("pid") == g.pid, timeout=60)
    assert (ev["comm"], ev["cgroup"], ev["constraint"]) == (comm, cg, "CONSTRAINT_MEMCG")
    assert ev["source"] == "kmsg" and ev["oom_memcg"] == cg
    # memory.events.local woke poll() (POLLPRI): oom, then oom_kill, on the cgroup itself
    oom = f.wait_for(lambda e: e["kind"] == "oom" and e["cgroup"] == cg, timeout=30)
    kill = f.wait_for(
        lambda e: e["kind"] == "oom_kill" and e["cgroup"] == cg and e["source"] != "kmsg",
        timeout=30,
    )
    assert oom["source"] == kill["source"] == "memory.events"
    assert oom["file"] == kill["file"] == "memory.events.local"
    assert kill["total"] == 1
    # the parent's own counters did not move: no event for it from memory.events.local
    assert not [e for e in f.events if e["cgroup"] == parent and e["source"] != "kmsg"]
    err = f.stop()
    assert "Traceback" not in err

    # the kernel's own counters: local 1 on the cgroup, hierarchical 1 on its parent
    assert events_file(cgroups, cg, local=True)["oom_kill"] == 1
    assert events_file(cgroups, parent, local=True)["oom_kill"] == 0
    assert events_file(cgroups, parent, local=False)["oom_kill"] == 1
    doc = json.loads(cli_json(state, "counters", cg, parent, "--json"))
    by = {c["cgroup"]: c for c in doc["cgroups"]}
    assert by[cg]["local"]["oom_kill"] == 1 and by[cg]["local"]["oom"] >= 1
    assert by[cg]["local"]["oom_group_kill"] == 0
    assert by[parent]["local"]["oom_kill"] == 0
    assert by[parent]["hierarchical"]["oom_kill"] == 1
    assert by[parent]["by_cause"] == {"system": 0, "memcg": 1, "user": 0}
    assert by[parent]["complete"] is True

    # history: the kernel ring (and the follower's journal copy), once
    out = cli_json(state, "events", parent, "--json")
    kills = json.loads(out)["events"]
    ours = [k for k in kills if k["kind"] == "oom_kill"]
    assert [k["pid"] for k in ours] == [g.pid]
    assert ours[0]["cgroup"] == cg and ours[0]["constraint"] == "CONSTRAINT_MEMCG"
    assert f"pid {g.pid} ({comm})" in cli_json(state, "events", parent)


def test_oom_group_predicted_and_killed_exactly(
    cgroups: TestCgroups, runner: CliRunner, tmp_path: Path
) -> None:
    top = cgroups.make("svc", limit=112 * MIB)
    grp = cgroups.make("svc/grp", limit=None)
    TestCgroups.write(cgroups.path(grp), "memory.oom.group", "1")
    a = cgroups.make("svc/grp/a", limit=None)
    b = cgroups.make("svc/grp/b", limit=None)
    other = cgroups.make("svc/other", limit=None)
    trig = cgroups.make("svc/trigger", limit=None)
    members = [cgroups.hog(a, 48), cgroups.sleeper(a), cgroups.sleeper(b), cgroups.hog(b, 4)]
    group = {p.pid for p in members}
    bystander = cgroups.hog(other, 8)
    env = {"MEMCGCTL_STATE_DIR": str(tmp_path)}

    def predict(*args: str) -> dict[str, object]:
        r = runner.invoke(cli, ["predict-victim", top, *args, "--json"], env=env)
        assert r.exit_code == 0, r.output
        doc: dict[str, object] = json.loads(r.output)
        return doc

    for policy in ("kernel", "priority"):
        doc = predict("--policy", policy)
        victim = doc["victim"]
        assert isinstance(victim, dict)
        assert victim["pid"] == members[0].pid, (policy, doc)
        pids = doc["group_pids"]
        assert isinstance(pids, list) and set(pids) == group, (policy, doc)
        kill_group = doc["kill_group"]
        assert isinstance(kill_group, dict) and kill_group["cgroup"] == grp, (policy, doc)
    # the plain explanation says so too
    r = runner.invoke(cli, ["predict-victim", top, "--explain", "--plain"], env=env)
    assert f"memory.oom.group: all of {grp} dies (4 pids" in r.output, r.output

    kmsg = Kmsg()
    try:
        # a small trigger outside the group pushes svc over its limit; the big member
        # is the kernel's victim, so the whole group goes
        trigger = cgroups.spawn(trig, [sys.executable, str(HELPERS / "grow.py"), "1024", "48"])
        for p in members:
            assert p.wait(timeout=60) == -signal.SIGKILL
        logged: set[int] = set()

        def all_logged() -> bool:
            for text in kmsg.records():
                m = KILLED.search(text)
                if m:
                    logged.add(int(m.group(1)))
            return group <= logged

        wait_until(all_logged, f"the kernel log to show the kills of {sorted(group)}", 10)
    finally:
        kmsg.close()
    ours = {bystander.pid, trigger.pid, *group}
    assert logged & ours == group  # the kernel killed exactly the predicted pids
    assert bystander.poll() is None
    assert trigger.stdout is not None and trigger.stdout.readline() == b"survived\n"
    assert cgroups.subtree_pids(grp) == []
    assert cgroups.pids(other) == [bystander.pid]
    # oom_group_kill counted (6.1 reports oom_kill 3 for 2 tasks: no exact oom_kill)
    assert events_file(cgroups, grp, local=False)["oom_group_kill"] >= 1
    assert events_file(cgroups, top, local=False)["oom_group_kill"] >= 1
    assert events_file(cgroups, top, local=False)["oom_kill"] >= len(group)
    assert events_file(cgroups, other, local=True)["oom_kill"] == 0
