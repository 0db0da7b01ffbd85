"""Inherited badness and rules against the real kernel (v1 here; tests/v2 in the guest):
real processes forked after their parent's badness was set, a real OOM, the daemon
killing by the resolved badness, and the kernel's counters as the oracle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.realkernel import HELPERS, TestCgroups, journaled, wait_until
from tests.test_daemon_kernel import REPO, Daemon, daemons, oom_control, set_xattr

__all__ = ["daemons"]  # the fixture, re-used


def cli(state: Path, *args: str, rules: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--rules", str(rules)] if rules is not None else []
    return subprocess.run(
        [sys.executable, "-m", "memcgctl", "--state-dir", str(state), *extra, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def spawn_family(tc: TestCgroups, cg: str) -> subprocess.Popen[bytes]:
    """tests/helpers/family.py in cg, its stdin a pipe: it forks workers on demand."""
    procs_file = tc.path(cg) / "cgroup.procs"
    p = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            f'echo $$ > "{procs_file}" && exec "$@"',
            "sh",
            sys.executable,
            str(HELPERS / "family.py"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    tc.procs.append(p)
    assert p.stdout is not None and p.stdout.readline() == b"ready\n"
    return p


def fork_worker(parent: subprocess.Popen[bytes], mib: int, grow_to: int) -> None:
    assert parent.stdin is not None
    parent.stdin.write(f"fork {mib} {grow_to}\n".encode())
    parent.stdin.flush()


def read_grown(parent: subprocess.Popen[bytes]) -> int:
    assert parent.stdout is not None
    words = parent.stdout.readline().split()
    assert words[:1] == [b"worker"] and words[2:] == [b"grown"], words
    return int(words[1])


def processes(state: Path, cg: str, rules: Path | None = None) -> dict[int, dict[str, object]]:
    r = cli(state, "ps", cg, "--json", rules=rules)
    assert r.returncode == 0, r.stderr
    return {p["pid"]: p for p in json.loads(r.stdout)["processes"]}


def test_workers_forked_after_set_badness_inherit_it_and_survive_a_real_oom(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A parent set to 900 forks workers; a default-badness process dies in the OOM
    the workers cause, the workers and the parent live on."""
    cg = cgroups.make("family", limit=128 << 20)
    set_xattr(cgroups, cg, "oom_delay_ms", "0")
    plain = cgroups.hog(cg, mib=24)  # badness 500 (default), never the biggest
    parent = spawn_family(cgroups, cg)
    r = cli(tmp_path, "set-badness", "--pid", str(parent.pid), "900")
    assert r.returncode == 0, r.stderr
    early = processes(tmp_path, cg)
    assert (early[parent.pid]["badness"], early[parent.pid]["badness_source"]) == (900, "process")
    assert early[plain.pid]["badness_source"] == "default"

    fork_worker(parent, 40, 40)
    holder = read_grown(parent)
    got = processes(tmp_path, cg)[holder]
    assert (got["badness"], got["badness_source"], got["badness_from"]) == (
        900,
        "inherited",
        parent.pid,
    )
    r = cli(tmp_path, "predict-victim", cg, "--json")
    assert json.loads(r.stdout)["victim"]["pid"] == plain.pid
    r = cli(tmp_path, "predict-victim", cg, "--policy", "kernel", "--json")
    assert json.loads(r.stdout)["victim"]["pid"] == holder  # the biggest
    r = cli(tmp_path, "predict-victim", cg, "--explain")
    assert f"badness 900 (inherited from {parent.pid})" in r.stdout, r.stdout

    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", cg)
    # 24 + 40 + 60 MiB and the interpreters > 128 MiB: the kernel would kill a worker
    fork_worker(parent, 0, 60)
    assert plain.wait(timeout=30) == -signal.SIGKILL
    grower = read_grown(parent)  # it reached its size once the default process died
    _, line = d.wait_for("daemon_kill", cg)
    assert f"pid={plain.pid}" in line and "badness_source=default" in line
    rec = journaled(tmp_path, "daemon_kill", plain.pid)
    assert (rec["badness"], rec["badness_source"], rec["badness_from"]) == (500, "default", None)
    # the kernel killed nobody; the 900s are all alive
    assert oom_control(cgroups, cg)["oom_kill"] == 0
    assert parent.poll() is None
    alive = processes(tmp_path, cg)
    for pid in (holder, grower):
        assert alive[pid]["badness_source"] == "inherited" and alive[pid]["badness_from"] == (
            parent.pid
        )
    assert d.stop() == 0


def test_a_rule_names_a_process_by_comm_and_the_daemon_kills_by_it(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """A rule gives the biggest process badness 100 by its name; a real OOM kills it
    (the default-badness grower survives), and the journal names the rule."""
    rules = tmp_path / "rules.d"
    rules.mkdir(mode=0o755)
    (rules / "10-test.toml").write_text(
        '[[rule]]\nname = "sacrificial"\ncomm = "^sleep$"\nbadness = 999\n\n'
        '[[rule]]\nname = "hogs-first"\ncmdline = "hog\\\\.py 40"\nbadness = 100\n'
    )
    cg = cgroups.make("byname", limit=128 << 20)
    set_xattr(cgroups, cg, "oom_delay_ms", "0")
    hog = cgroups.hog(cg, mib=40)
    sleeper = cgroups.sleeper(cg)
    state = tmp_path / "state"
    got = processes(state, cg, rules)
    assert (got[hog.pid]["badness"], got[hog.pid]["badness_from"]) == (100, "hogs-first")
    assert got[sleeper.pid]["badness_source"] == "rule"
    d = Daemon(state, cgroups.parent, "--rules", str(rules))
    daemons.append(d)
    d.wait_for("daemon_took_over", cg)
    # the grower outgrows the hog: the kernel would kill it, the rule says the hog
    grow = cgroups.spawn(cg, [sys.executable, str(HELPERS / "grow.py"), "1024", "88"])
    assert hog.wait(timeout=30) == -signal.SIGKILL
    assert grow.stdout is not None and grow.stdout.readline() == b"survived\n"
    rec = journaled(state, "daemon_kill", hog.pid)
    assert (rec["badness_source"], rec["badness_from"]) == ("rule", "hogs-first")
    assert oom_control(cgroups, cg)["oom_kill"] == 0
    wait_until(lambda: sleeper.poll() is None or None, "the sleeper alive")
    assert os.path.exists(f"/proc/{sleeper.pid}")
    assert d.stop() == 0
