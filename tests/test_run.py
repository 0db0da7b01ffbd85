"""``memcgctl run``: plan and refusals on fixture trees; the real thing on the kernel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from memcgctl.cli import cli
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.hierarchy import hierarchy_at
from memcgctl.vocab.cgpath import CgroupPath
from tests.fakehost import FakeHost
from tests.realkernel import TestCgroups

ROOT = Path(__file__).resolve().parent.parent


def run(host: FakeHost, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=host.cli_env())


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    fake_v1.cgroup("/batch", limit=512 << 20)
    fake_v1.cgroup("/svc")
    return fake_v1


def tree_of(host: FakeHost) -> list[str]:
    return sorted(str(p.relative_to(host.cgroot)) for p in host.cgroot.rglob("*") if p.is_dir())


def test_dry_run_prints_the_plan_and_changes_nothing(host: FakeHost) -> None:
    before = tree_of(host)
    r = run(
        host, "run", "-n", "-c", "batch/new/job", "-b", "10", "-d", "2s", "-m", "64M",
        "--", "sh", "-c", "x",
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[:4] == [
        "would create cgroup /batch/new",
        "would create cgroup /batch/new/job",
        "would set memory.limit_in_bytes of /batch/new/job to 64.0M",
        "would set OOM delay of /batch/new/job to 2s",
    ]
    assert lines[4].startswith("would move pid ") and lines[4].endswith(" into /batch/new/job")
    assert lines[5].startswith("would register badness 10 for pid ")
    assert lines[6].startswith("would exec /") and lines[6].endswith("sh -c x")
    assert tree_of(host) == before
    assert not (host.state / "badness.json").exists()


def test_dry_run_existing_cgroup_creates_nothing(host: FakeHost) -> None:
    r = run(host, "run", "--dry-run", "--cgroup", "/svc", "--", "true")
    assert r.exit_code == 0, r.output
    assert not any(line.startswith("would create") for line in r.stdout.splitlines())


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--cgroup", "../escape"], 2, "'..' would leave"),
        (["--cgroup", "batch/../../x"], 2, "'..' would leave"),
        (["--cgroup", "/"], 2, "root cannot be"),
        (["--cgroup", "/sys/fs/cgroup/cpu/x"], 2, "not in the memory cgroup hierarchy"),
        (["--badness", "1001"], 2, "badness"),
        (["--badness", "low"], 2, "badness"),
        (["--delay", "2s"], 2, "--delay needs --cgroup"),
        (["--cgroup", "svc", "--delay", "soon"], 2, "not a duration"),
        (["--cgroup", "batch/new"], 2, "new v1 memcg without a limit"),
        (["--cgroup", "svc", "--memory-max", "lots"], 2, "not a size"),
        (["--memory-max", "64M"], 2, "need --cgroup"),
        (["--cgroup", "svc", "--memory-high", "32M"], 5, "cgroup v2 only"),
        (["--cgroup", "batch/new", "-m", "64M", "--no-limit"], 2, "give one of them"),
    ],
)
def test_refusals(host: FakeHost, args: list[str], code: int, needle: str) -> None:
    before = tree_of(host)
    r = run(host, "run", *args, "--", "true")
    assert r.exit_code == code, r.output
    assert needle in r.stderr
    assert "Traceback" not in r.output
    assert tree_of(host) == before


def test_no_limit_plan(host: FakeHost) -> None:
    r = run(host, "run", "-n", "-c", "batch/new", "--no-limit", "--", "true")
    assert r.exit_code == 0, r.output
    assert "would create cgroup /batch/new" in r.stdout and "memory" not in r.stdout


def test_v2_memory_high_plan(fake_v2: FakeHost) -> None:
    fake_v2.cgroup("/work")
    r = run(fake_v2, "run", "-n", "-c", "work/job", "--memory-max", "1G", "--memory-high",
            "512MiB", "--", "true")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "would set memory.max of /work/job to 1.0G" in r.stdout
    assert "would set memory.high of /work/job to 512.0M" in r.stdout
    # v2: a new memcg without a limit is fine (the parent's limits and memory.events apply)
    r = run(fake_v2, "run", "-n", "-c", "work/other", "--", "true")
    assert r.exit_code == 0, r.output


def test_symlink_in_the_existing_part_is_refused(host: FakeHost) -> None:
    (host.cgroot / "link").symlink_to(host.cgroot / "batch")
    r = run(host, "run", "--cgroup", "link/job", "--", "true")
    assert r.exit_code == 2
    assert "symbolic links" in r.stderr
    assert not (host.cgroot / "batch" / "job").exists()


def test_command_not_found_127_not_executable_126(host: FakeHost, tmp_path: Path) -> None:
    r = run(host, "run", "--", "no-such-command-memcgctl")
    assert r.exit_code == 127
    assert r.stderr == "memcgctl: no-such-command-memcgctl: command not found\n"
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    r = run(host, "run", "--", str(script))
    assert r.exit_code == 126
    assert "cannot execute" in r.stderr
    r = run(host, "run", "--", str(tmp_path))  # a directory
    assert r.exit_code == 126


def test_command_is_required(host: FakeHost) -> None:
    r = run(host, "run", "--cgroup", "svc")
    assert r.exit_code == 2


def test_resolve_new_lists_missing_parents(host: FakeHost) -> None:
    fs = CgroupFs(hierarchy_at(host.cgroot))
    assert fs.resolve_new("batch/a/b") == ("/batch/a/b", ["/batch/a", "/batch/a/b"])
    assert fs.resolve_new("/svc") == ("/svc", [])
    assert fs.resolve_new(f"{host.cgroot}/svc/x") == ("/svc/x", ["/svc/x"])


def test_v2_new_cgroup_gets_the_memory_controller(fake_v2: FakeHost) -> None:
    fake_v2.cgroup("/work")
    (fake_v2.cgroot / "work" / "cgroup.subtree_control").write_text("pids\n")
    fs = CgroupFs(hierarchy_at(fake_v2.cgroot))
    fs.make(CgroupPath("/work/job"))
    assert (fake_v2.cgroot / "work" / "job").is_dir()
    assert fs.enable_memory_controller(CgroupPath("/work")) is True
    assert (fake_v2.cgroot / "work" / "cgroup.subtree_control").read_text().startswith("+memory")
    (fake_v2.cgroot / "work" / "cgroup.subtree_control").write_text("memory pids\n")
    assert fs.enable_memory_controller(CgroupPath("/work")) is False


def test_exec_without_cgroup_keeps_exit_status_and_default_sigpipe(host: FakeHost) -> None:
    """exec really replaces memcgctl: CMD's exit status comes back, and SIGPIPE is not
    left ignored (Python ignores it; ignored signals survive exec)."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "memcgctl",
            "run",
            "--",
            "sh",
            "-c",
            "grep SigIgn /proc/$$/status; exit 7",
        ],
        cwd=ROOT,
        env={**os.environ, **host.cli_env()},
        capture_output=True,
        text=True,
    )
    assert p.returncode == 7, p.stderr
    sigign = int(p.stdout.split()[1], 16)
    assert not sigign & (1 << (13 - 1)), "SIGPIPE still ignored after exec"


# -- the real kernel -------------------------------------------------------------------


@pytest.mark.kernel
def test_run_joins_a_new_memcg_and_registers_badness(cgroups: TestCgroups, tmp_path: Path) -> None:
    job = cgroups.parent + "/job"
    limit_file = cgroups.path(job) / "memory.limit_in_bytes"
    state = tmp_path / "state"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memcgctl",
            "run",
            "--cgroup",
            job,
            "--badness",
            "10",
            "--memory-max",
            "48M",
            "--",
            "sh",
            "-c",
            f"cat /proc/self/cgroup; echo pid $$; echo limit $(cat {limit_file});"
            " echo ready; exec sleep 60",
        ],
        cwd=ROOT,
        env={**os.environ, "MEMCGCTL_STATE_DIR": str(state)},
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    cgroups.procs.append(p)  # type: ignore[arg-type]  # killed by the fixture's cleanup
    assert p.stdout is not None
    lines = []
    for line in p.stdout:
        lines.append(line.rstrip("\n"))
        if line == "ready\n":
            break
    memory_lines = [ln for ln in lines if ":memory:" in ln]
    assert memory_lines == [f"{memory_lines[0].split(':')[0]}:memory:{job}"], lines
    assert f"pid {p.pid}" in lines  # the shell is the memcgctl process, exec'd
    assert f"limit {48 << 20}" in lines  # set before CMD started
    assert cgroups.path(job).is_dir()
    assert cgroups.pids(job) == [p.pid]

    start = int(Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    doc = json.loads((state / "badness.json").read_text())
    (entry,) = (e for e in doc["processes"] if e["pid"] == p.pid)
    assert entry.pop("set_at") >= start  # children forked from now on inherit it
    assert entry == {"pid": p.pid, "start_time": start, "badness": 10}

    out = subprocess.run(
        [sys.executable, "-m", "memcgctl", "ps", job, "--json"],
        cwd=ROOT,
        env={**os.environ, "MEMCGCTL_STATE_DIR": str(state)},
        capture_output=True,
        text=True,
        check=True,
    )
    procs = {q["pid"]: q for q in json.loads(out.stdout)["processes"]}
    assert procs[p.pid]["comm"] == "sleep"
    assert (procs[p.pid]["badness"], procs[p.pid]["badness_source"]) == (10, "process")


@pytest.mark.kernel
def test_run_sets_the_delay_on_a_real_memcg(cgroups: TestCgroups, tmp_path: Path) -> None:
    job = cgroups.parent + "/a/b"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "memcgctl",
            "run",
            "-c",
            job,
            "-d",
            "1500ms",
            "--no-limit",
            "--",
            "true",
        ],
        cwd=ROOT,
        env={**os.environ, "MEMCGCTL_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    assert os.getxattr(cgroups.path(job), "trusted.memcgctl.oom_delay_ms") == b"1500"
    assert cgroups.path(cgroups.parent + "/a").is_dir()
