"""The foundation against the real kernel: real memcgs, real processes, real xattrs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from memcgctl.cli import cli
from memcgctl.kernel.procfs import parse_stat_starttime
from tests.realkernel import TestCgroups, as_uid

NOBODY = 65534


def run(state: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"MEMCGCTL_STATE_DIR": str(state)})


def test_tree_and_ps_show_real_usage_and_pids(cgroups: TestCgroups, tmp_path: Path) -> None:
    # processes only in leaves, so this runs on v2 too (no internal processes there)
    a = cgroups.make("a", limit=96 << 20)
    b = cgroups.make("a/b", limit=32 << 20)
    c = cgroups.make("a/c", limit=64 << 20)
    big = cgroups.hog(c, mib=16)
    small = cgroups.hog(b, mib=4)
    r = run(tmp_path, "tree", cgroups.parent, "--json")
    assert r.exit_code == 0, r.output
    by = {c["cgroup"]: c for c in json.loads(r.stdout)["cgroups"]}
    assert list(by) == [cgroups.parent, a, b, c]
    assert by[a]["limit_bytes"] == 96 << 20 and by[b]["limit_bytes"] == 32 << 20
    # usage is hierarchical (v1 and v2): a includes b and c
    assert by[a]["usage_bytes"] >= (16 + 4) << 20
    assert by[b]["usage_bytes"] >= 4 << 20
    assert (by[a]["nr_tasks"], by[b]["nr_tasks"], by[c]["nr_tasks"]) == (0, 1, 1)
    # v1 reports under_oom; v2 has no such state (None)
    assert by[a]["under_oom"] is (False if cgroups.version == 1 else None)
    r = run(tmp_path, "ps", cgroups.parent, "--json", "--sort", "rss")
    procs = json.loads(r.stdout)["processes"]
    assert [p["pid"] for p in procs] == [big.pid, small.pid]
    assert procs[0]["cgroup"] == c and procs[0]["rss_kb"] >= 16 << 10
    for p in procs:
        assert p["oom_score"] == int(Path(f"/proc/{p['pid']}/oom_score").read_text())
    # --pid names the memcg of a real process
    r = run(tmp_path, "ps", "--pid", str(small.pid), "--json")
    assert json.loads(r.stdout)["root"] == b
    r = run(tmp_path, "tree", cgroups.parent, "--plain")
    assert r.exit_code == 0 and "├─ b" in r.stdout and "└─ c" in r.stdout


def test_badness_and_delay_live_in_real_xattrs(cgroups: TestCgroups, tmp_path: Path) -> None:
    job = cgroups.make("job")
    d = cgroups.path(job)
    r = run(tmp_path, "set-badness", job, "42")
    assert r.exit_code == 0, r.output
    assert os.getxattr(d, "trusted.memcgctl.badness") == b"42"
    r = run(tmp_path, "set-delay", str(d), "750ms")  # the absolute path under the mount
    assert r.exit_code == 0, r.output
    assert os.getxattr(d, "trusted.memcgctl.oom_delay_ms") == b"750"
    r = run(tmp_path, "tree", job, "--json")
    cg = json.loads(r.stdout)["cgroups"][0]
    assert (cg["badness"], cg["badness_source"], cg["oom_delay_ms"]) == (42, "trusted", 750)
    run(tmp_path, "set-badness", job, "default")
    run(tmp_path, "set-delay", job, "off")
    assert not [n for n in os.listxattr(d) if "memcgctl" in n]


def test_process_registry_on_real_processes(cgroups: TestCgroups, tmp_path: Path) -> None:
    job = cgroups.make("job")
    p = cgroups.sleeper(job)
    r = run(tmp_path, "set-badness", "--pid", str(p.pid), "10", "--json")
    assert r.exit_code == 0, r.output
    start = parse_stat_starttime(Path(f"/proc/{p.pid}/stat").read_bytes())
    assert json.loads(r.stdout)["start_time"] == start
    doc = json.loads((tmp_path / "badness.json").read_text())
    assert doc["boot_id"] == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    (entry,) = doc["processes"]
    assert entry.pop("set_at") >= start  # when it was set, in clock ticks since boot
    assert entry == {"pid": p.pid, "start_time": start, "badness": 10}
    r = run(tmp_path, "ps", job, "--json")
    assert json.loads(r.stdout)["processes"][0]["badness"] == 10
    p.kill()
    p.wait()
    r = run(tmp_path, "get-badness", "--pid", str(p.pid))
    assert r.exit_code == 3
    # the next write prunes the dead entry
    q = cgroups.sleeper(job)
    run(tmp_path, "set-badness", "--pid", str(q.pid), "11")
    pids = [e["pid"] for e in json.loads((tmp_path / "badness.json").read_text())["processes"]]
    assert pids == [q.pid]


def test_raised_oom_score_adj_is_read_and_keeps_default_badness(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    # -1000 -> badness 1000 is covered on fixture trees: setting -1000 needs
    # CAP_SYS_RESOURCE, which root lacks on these machines.
    job = cgroups.make("job")
    p = cgroups.hog(job, adj=300)
    r = run(tmp_path, "ps", job, "--json")
    proc = json.loads(r.stdout)["processes"][0]
    assert (proc["pid"], proc["oom_score_adj"], proc["badness_source"]) == (p.pid, 300, "default")


@pytest.fixture
def delegated(cgroups: TestCgroups) -> str:
    """A subtree owned by nobody, as a delegating manager would hand it out."""
    top = cgroups.make("deleg")
    d = cgroups.path(top)
    for f in [
        d,
        *(d / n for n in ("cgroup.procs", "tasks", "cgroup.subtree_control", "cgroup.threads")),
    ]:
        if f.exists():
            os.chown(f, NOBODY, NOBODY)
    return top


def test_delegated_user_ranks_inside_but_not_its_root(
    cgroups: TestCgroups, delegated: str, tmp_path: Path
) -> None:
    inner = f"{delegated}/inner"
    mount = cgroups.mount

    def as_nobody() -> list[int]:
        os.mkdir(mount / inner.lstrip("/"))
        codes = []
        for target in (inner, delegated):
            r = CliRunner().invoke(cli, ["set-badness", target, "5"])
            codes.append(r.exit_code)
        return codes

    codes = as_uid(NOBODY, as_nobody)
    assert codes == [0, 0]  # the kernel lets nobody write user.* on both
    inner_dir = cgroups.path(inner)
    assert os.stat(inner_dir).st_uid == NOBODY
    assert os.getxattr(inner_dir, "user.memcgctl.badness") == b"5"
    assert os.getxattr(cgroups.path(delegated), "user.memcgctl.badness") == b"5"
    r = run(tmp_path, "get-badness", inner, delegated, "--json")
    got = {
        i["cgroup"]: (i["badness"], i["badness_source"]) for i in json.loads(r.stdout)["cgroups"]
    }
    # honoured inside the subtree, ignored on the subtree's own root
    assert got == {inner: (5, "user"), delegated: (500, "default")}
    # trusted.* wins
    run(tmp_path, "set-badness", inner, "900")
    r = run(tmp_path, "get-badness", inner, "--json")
    assert json.loads(r.stdout)["cgroups"][0] == {
        "cgroup": inner,
        "badness": 900,
        "badness_source": "trusted",
    }


def test_unprivileged_write_on_root_owned_cgroup_is_exit_4(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    job = cgroups.make("job")
    before = os.listxattr(cgroups.path(job))

    def attempt() -> list[object]:
        r = CliRunner().invoke(cli, ["set-badness", job, "5"])
        return [r.exit_code, r.stderr]

    result = as_uid(NOBODY, attempt)
    assert isinstance(result, list)
    code, stderr = result
    assert code == 4, stderr
    assert str(stderr).count("\n") == 1 and "permission denied" in str(stderr)
    assert os.listxattr(cgroups.path(job)) == before
