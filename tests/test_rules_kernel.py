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


def xattr(tc: TestCgroups, cg: str, name: str) -> str | None:
    try:
        return os.getxattr(tc.path(cg), f"trusted.memcgctl.{name}").decode()
    except OSError:
        return None


def test_apply_then_a_recreated_cgroup_gets_its_rule_back_before_its_next_oom(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Cgroup rules written by `apply` (an explicit value kept), and by the daemon on a
    cgroup removed and made again (as a restarting unit's is): the re-created cgroup
    has badness 100 again before it runs out of memory, and the daemon kills in it by
    that badness rather than the biggest process elsewhere."""
    top = cgroups.make("jobs", limit=128 << 20)
    low = cgroups.make("jobs/low", limit=None)
    high = cgroups.make("jobs/high", limit=None)
    rules = tmp_path / "rules.d"
    rules.mkdir(mode=0o755)
    (rules / "20-jobs.toml").write_text(
        f'[[rule]]\nname = "jobs-managed"\ncgroup = "{top}"\noom_delay = "0"\n\n'
        f'[[rule]]\nname = "low-first"\ncgroup = "{top}/low*"\nbadness = 100\n\n'
        f'[[rule]]\nname = "high-last"\ncgroup = "{high}"\nbadness = 10\n'
    )
    state = tmp_path / "state"
    r = cli(state, "set-badness", high, "900")  # by hand: the rule "high-last" must not win
    assert r.returncode == 0, r.stderr
    r = cli(state, "apply", cgroups.parent, "--rules", str(rules), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert f"{low}: would set badness 100 (rule low-first), was unset" in r.stdout
    assert f"{high}: kept badness 900 (set by hand; rule high-last not applied)" in r.stdout
    assert xattr(cgroups, low, "badness") is None
    r = cli(state, "apply", cgroups.parent, "--rules", str(rules), "--json")
    doc = json.loads(r.stdout)
    assert {(c["cgroup"], c["setting"], c["action"], c["after"]) for c in doc["changes"]} == {
        (top, "oom_delay_ms", "set", 0),
        (low, "badness", "set", 100),
        (high, "badness", "kept", 900),
    }
    assert (xattr(cgroups, low, "badness"), xattr(cgroups, low, "badness_rule")) == (
        "100",
        "low-first",
    )
    r = cli(state, "tree", top, "--json", rules=rules)
    shown = {c["cgroup"]: c for c in json.loads(r.stdout)["cgroups"]}
    assert shown[low]["badness_rule"] == "low-first" and shown[high]["badness_rule"] is None

    d = Daemon(state, cgroups.parent, "--rules", str(rules))
    daemons.append(d)
    d.wait_for("daemon_took_over", top)
    cgroups.path(low).rmdir()  # the unit stops ...
    cgroups.make("jobs/low", limit=None)  # ... and starts again: a new cgroup, no xattrs
    wait_until(lambda: xattr(cgroups, low, "badness") == "100" or None, "the rule re-applied")
    _, line = d.wait_for("rule_applied", low)
    assert "rule=low-first" in line
    big = cgroups.hog(high, mib=56)  # the kernel would kill this one
    g = cgroups.spawn(low, [sys.executable, str(HELPERS / "grow.py"), "4096", "512"])
    assert g.wait(timeout=30) == -signal.SIGKILL
    _, line = d.wait_for("daemon_kill", top)
    assert f"pid={g.pid}" in line
    assert big.poll() is None
    for cg in (top, low, high):
        assert oom_control(cgroups, cg)["oom_kill"] == 0
    # a bad rules file: reported with its line, the last good rules kept
    (rules / "30-bad.toml").write_text("[[rule]]\nname = 'x'\ncgroup = \n")
    _, line = d.wait_for("rules_rejected")
    assert "30-bad.toml:3" in line and d.proc.poll() is None
    (rules / "30-bad.toml").unlink()
    d.proc.send_signal(signal.SIGHUP)  # reload (no longer: stop)
    _, line = d.wait_for("rules_loaded")
    assert "count=3" in line and d.proc.poll() is None
    assert d.stop() == 0


NOBODY = 65534


def test_rules_are_roots_a_delegated_user_cannot_use_them(cgroups: TestCgroups) -> None:
    """As nobody, owner of a delegated subtree: its own rules directory is refused
    (exit 4), and root's rules cannot be applied by it (trusted.* is root's): nothing
    outside or inside its subtree is ranked by a rule it chose."""
    import shutil
    import tempfile

    from click.testing import CliRunner

    from memcgctl.cli import cli as memcgctl_cli
    from tests.realkernel import as_uid

    deleg = cgroups.make("deleg")
    mine = cgroups.make("deleg/mine", limit=None)
    other = cgroups.make("other")
    for cg in (deleg, mine):
        os.chown(cgroups.path(cg), NOBODY, NOBODY)
        os.chown(cgroups.path(cg) / "cgroup.procs", NOBODY, NOBODY)
    base = Path(tempfile.mkdtemp(prefix="memcgctl-rules-"))
    try:
        os.chmod(base, 0o755)
        evil = base / "evil"
        evil.mkdir()
        os.chown(evil, NOBODY, NOBODY)
        state = base / "state"
        state.mkdir(mode=0o700)
        os.chown(state, NOBODY, NOBODY)
        roots = base / "roots"
        roots.mkdir(mode=0o755)
        (roots / "10.toml").write_text(f'[[rule]]\ncgroup = "{deleg}/**"\nbadness = 1\n')
        env = {"MEMCGCTL_CGROUP_ROOT": str(cgroups.mount), "MEMCGCTL_STATE_DIR": str(state)}

        def attack() -> list[tuple[int, str]]:
            (evil / "10.toml").write_text(
                f'[[rule]]\ncgroup = "{other}"\nbadness = 0\n\n[[rule]]\ncomm = "."\nbadness = 0\n'
            )
            out = []
            for argv in (
                ["--rules", str(evil), "ps", other, "--json"],
                ["--rules", str(evil), "apply", other],
                ["apply", deleg, "--rules", str(roots)],
            ):
                r = CliRunner().invoke(memcgctl_cli, argv, env=env)
                out.append((r.exit_code, r.stderr))
            return out

        results = as_uid(NOBODY, attack)
        assert isinstance(results, list)
        (c1, e1), (c2, e2), (c3, e3) = results
        assert c1 == 4 and "refusing the rules: owned by uid 65534, not root" in e1
        assert c2 == 4 and e2.count("\n") == 1 and "Traceback" not in e2
        assert c3 == 4 and "(trusted.memcgctl.badness): permission denied" in e3
        for cg in (other, deleg, mine):
            assert xattr(cgroups, cg, "badness") is None
    finally:
        shutil.rmtree(base)
