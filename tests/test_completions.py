"""Shell completion: the committed scripts are current, and the bash one works in bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakehost import FakeHost
from tests.realkernel import TestCgroups
from tools import gen_completions

ROOT = Path(__file__).resolve().parent.parent


def test_committed_completions_are_current(tmp_path: Path) -> None:
    gen_completions.generate(tmp_path)
    for name in gen_completions.FILES.values():
        committed = ROOT / "completions" / name
        assert committed.exists(), f"{committed} missing: run tools/gen_completions.py"
        assert committed.read_text() == (tmp_path / name).read_text(), (
            f"{committed} is stale: run python3 tools/gen_completions.py"
        )


@pytest.fixture
def memcgctl_on_path(tmp_path: Path) -> Path:
    """A ``memcgctl`` on PATH that runs this worktree's package with this Python."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "memcgctl"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m memcgctl "$@"\n')
    script.chmod(0o755)
    return bindir


def bash_complete(bindir: Path, words: list[str], env: dict[str, str]) -> list[str]:
    """Source the bash script in a real bash and call its completion function the way
    bash does at TAB (COMP_WORDS/COMP_CWORD set, the command name as $1)."""
    bash = shutil.which("bash")
    assert bash is not None, "bash is needed for this test"
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    script = (
        f"source '{ROOT}/completions/memcgctl.bash'\n"
        f"COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}\n"
        "_memcgctl_completion memcgctl\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    full_env = {
        **os.environ,
        **env,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    p = subprocess.run(
        [bash, "--norc", "--noprofile", "-c", script],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return [line for line in p.stdout.splitlines() if line]


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    fake_v1.cgroup("/batch")
    fake_v1.cgroup("/batch/job1")
    fake_v1.cgroup("/batch/job2")
    fake_v1.cgroup("/svc")
    return fake_v1


def test_bash_completes_a_subcommand(memcgctl_on_path: Path, host: FakeHost) -> None:
    assert bash_complete(memcgctl_on_path, ["memcgctl", "tr"], host.cli_env()) == ["tree"]
    assert bash_complete(memcgctl_on_path, ["memcgctl", "ru"], host.cli_env()) == ["run"]
    got = bash_complete(memcgctl_on_path, ["memcgctl", "get-"], host.cli_env())
    assert got == ["get-badness", "get-delay"]


def test_bash_completes_options(memcgctl_on_path: Path, host: FakeHost) -> None:
    got = bash_complete(memcgctl_on_path, ["memcgctl", "run", "--ba"], host.cli_env())
    assert got == ["--badness"]


def test_bash_completes_cgroup_names_from_the_hierarchy(
    memcgctl_on_path: Path, host: FakeHost
) -> None:
    env = host.cli_env()
    assert bash_complete(memcgctl_on_path, ["memcgctl", "tree", "/ba"], env) == ["/batch"]
    assert bash_complete(memcgctl_on_path, ["memcgctl", "get-delay", "/batch/"], env) == [
        "/batch/job1",
        "/batch/job2",
    ]
    assert bash_complete(memcgctl_on_path, ["memcgctl", "ps", "batch/job"], env) == [
        "batch/job1",
        "batch/job2",
    ]
    assert bash_complete(memcgctl_on_path, ["memcgctl", "set-badness", "s"], env) == ["svc"]
    assert bash_complete(memcgctl_on_path, ["memcgctl", "run", "--cgroup", "/s"], env) == ["/svc"]
    # the global option reaches completion too
    env2 = {"MEMCGCTL_CGROUP_ROOT": str(host.cgroot / "batch")}
    assert bash_complete(memcgctl_on_path, ["memcgctl", "tree", "/j"], env2) == [
        "/job1",
        "/job2",
    ]


def test_completion_never_fails(memcgctl_on_path: Path, host: FakeHost) -> None:
    for words in (
        ["memcgctl", "tree", "../"],
        ["memcgctl", "tree", "/nope/"],
        ["memcgctl", "tree", "/svc/x"],
    ):
        assert bash_complete(memcgctl_on_path, words, host.cli_env()) == []
    broken = {"MEMCGCTL_CGROUP_ROOT": "/nonexistent/cgroup"}
    assert bash_complete(memcgctl_on_path, ["memcgctl", "tree", "/"], broken) == []


@pytest.mark.kernel
def test_bash_completes_a_real_test_cgroup(memcgctl_on_path: Path, cgroups: TestCgroups) -> None:
    cgroups.make("alpha", limit=64 << 20)
    cgroups.make("beta", limit=64 << 20)
    got = bash_complete(memcgctl_on_path, ["memcgctl", "tree", cgroups.parent + "/al"], {})
    assert got == [cgroups.parent + "/alpha"]
    got = bash_complete(memcgctl_on_path, ["memcgctl", "tree", cgroups.parent + "/"], {})
    assert got == [cgroups.parent + "/alpha", cgroups.parent + "/beta"]


def test_fish_script_works_in_fish(memcgctl_on_path: Path, host: FakeHost) -> None:
    """click 8.4's own fish script cannot parse its own output; ours can (see
    memcgctl/commands/completion.py).  fish is optional on the development machines."""
    fish = shutil.which("fish")
    if fish is None:
        if os.environ.get("CI"):
            pytest.fail("fish is not installed: .ci/run installs it (apt-get install fish)")
        pytest.skip("fish is not installed (apt-get install fish to run this test)")
    script = (
        f"source '{ROOT}/completions/memcgctl.fish'\n"
        "complete -C 'memcgctl tr'\ncomplete -C 'memcgctl tree /batch/'\n"
    )
    env = {
        **os.environ,
        **host.cli_env(),
        "PATH": f"{memcgctl_on_path}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    p = subprocess.run(
        [fish, "--no-config", "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.stderr == ""
    lines = p.stdout.splitlines()
    assert lines[0].split("\t")[0] == "tree"
    assert lines[1:] == ["/batch/job1", "/batch/job2"]


def test_bash_completes_signal_names_and_pids(memcgctl_on_path: Path, host: FakeHost) -> None:
    env = host.cli_env()
    got = bash_complete(memcgctl_on_path, ["memcgctl", "kill-all", "--signal", "K"], env)
    assert got == ["KILL"]
    got = bash_complete(memcgctl_on_path, ["memcgctl", "kill-all", "--signal", "T"], env)
    assert "TERM" in got and "TRAP" in got
    host.process(200, "/batch/job1", comm="worker")
    host.process(2001, "/svc", comm="api")
    host.process(2, "/", comm="kthreadd", kthread=True)
    for pid in (200, 2001):
        (host.proc / str(pid) / "cmdline").write_bytes(b"prog\x00")
    (host.proc / "2" / "cmdline").write_bytes(b"")  # a kernel thread
    assert bash_complete(memcgctl_on_path, ["memcgctl", "ps", "--pid", "2"], env) == [
        "200",
        "2001",
    ]
    got = bash_complete(memcgctl_on_path, ["memcgctl", "set-delay", "--pid", "20"], env)
    assert got == ["200", "2001"]
