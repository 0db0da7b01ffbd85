"""``memcgctl daemon`` hands its checked configuration to an interpreter of its own
(commands/daemonrun.py: exec, same pid, no click): the configuration survives the trip,
the program's errors keep their line and exit status, a caller's process (CliRunner)
is never replaced, and a failed exec runs the daemon where it is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest
from click.testing import CliRunner

from memcgctl import cli
from memcgctl.commands import daemonrun
from memcgctl.daemon import main
from memcgctl.daemon.config import DaemonConfig
from memcgctl.env import Env
from memcgctl.vocab.cgpath import CgroupPath
from tests.fakehost import FakeHost
from tests.test_cli_foundation import state
from tests.test_rules_unit import rules_dir

REPO = Path(__file__).resolve().parent.parent

CONFIGS = [
    DaemonConfig(),
    DaemonConfig(
        root=CgroupPath("/kubepods/pod\u00e9/c 1"),
        policy="kernel",
        dry_run=True,
        grace=1.25,
        max_rounds=7,
        host_short=0.2,
        host_critical=0.05,
        psi_stall_us=200_000,
        psi_window_us=2_000_000,
        headroom=0.25,
        freeze=False,
        rescan=0.3,
        pre_kill="echo 'a b' \"$X\"",
        post_kill="true",
        hook_timeout=0.1,
        rules_dir=Path("/etc/x/r\udcff"),
        guardian="systemd",
        mlock=False,
        systemd_env=MappingProxyType({"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "5"}),
    ),
    DaemonConfig(root=CgroupPath("/"), host_delay_ms=0, guardian="none"),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_config_survives_the_handoff(config: DaemonConfig, tmp_path: Path) -> None:
    env = Env(
        cgroup_root=tmp_path / "cg",
        proc_root=tmp_path / "proc",
        kmsg=str(tmp_path / "kmsg"),
        state_dir=tmp_path / "state",
        default_state_dir=tmp_path / "default",
        rules_dir=tmp_path / "rules",
    )
    got_env, got = daemonrun.decode(daemonrun.encode(env, config))
    assert got == config
    assert type(got.root) is CgroupPath and isinstance(got.systemd_env, MappingProxyType)
    for name in ("cgroup_root", "proc_root", "kmsg", "state_dir", "default_state_dir"):
        assert getattr(got_env, name) == getattr(env, name), name
    assert got_env.rules_dir == env.rules_dir and got_env.program


def test_no_cgroup_root_stays_none() -> None:
    got_env, _ = daemonrun.decode(daemonrun.encode(Env(), DaemonConfig()))
    assert got_env.cgroup_root is None


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    fake_v1.cgroup("/batch", limit=512 << 20, delay_ms=1000)
    return fake_v1


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the daemon command called (neither hands off nor runs for real)."""
    seen: list[str] = []
    monkeypatch.setattr(daemonrun, "handoff", lambda env, config: seen.append("handoff"))
    monkeypatch.setattr(main, "run", lambda env, config: seen.append("run"))
    return seen


def test_a_callers_process_is_never_replaced(host: FakeHost, calls: list[str]) -> None:
    r = CliRunner().invoke(cli.cli, ["daemon", "--guardian=none"], env=host.cli_env())
    assert r.exit_code == 0, r.output
    assert calls == ["run"]


def test_the_program_hands_off_then_runs_if_the_exec_failed(
    host: FakeHost, calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k, v in host.cli_env().items():
        monkeypatch.setenv(k, v)
    assert cli.main(["daemon", "--guardian=none"]) == 0
    assert calls == ["handoff", "run"]


def test_a_failed_exec_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    tried: list[list[str]] = []

    def execv(path: str, argv: list[str]) -> None:
        assert daemonrun.ENV_VAR in os.environ
        tried.append(argv)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "execv", execv)
    monkeypatch.delenv(daemonrun.ENV_VAR, raising=False)
    daemonrun.handoff(Env(), DaemonConfig())  # returns: the caller runs the daemon
    assert daemonrun.ENV_VAR not in os.environ
    [argv] = tried
    code = argv[argv.index("-c") + 1]
    assert argv[0] == sys.executable and "-S" in argv and "memcgctl.commands.daemonrun" in code


def test_the_daemon_interpreter_without_a_config_says_so(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(daemonrun.ENV_VAR, raising=False)
    assert daemonrun.main([]) == 2
    assert capfd.readouterr().err == (
        f"memcgctl: daemon: no {daemonrun.ENV_VAR} (started by `memcgctl daemon` only)\n"
    )


def test_bad_rules_in_the_daemons_own_interpreter(host: FakeHost, tmp_path: Path) -> None:
    """A real program run: the daemon's interpreter (the second importtime header) reads
    the bad rules and says so in one line, exit 2, before it takes anything over."""
    d = rules_dir(tmp_path, {"50-x.toml": "[[rule]]\ncomm = 'a'\nbadness = -1\n"})
    before = state(host)
    argv = [sys.executable, "-X", "importtime", "-m", "memcgctl", "daemon", "--rules", str(d)]
    p = subprocess.run(
        [*argv, "--guardian=none", "--no-mlock"],
        cwd=REPO,
        env={**os.environ, **host.cli_env()},
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2, p.stderr
    lines = p.stderr.splitlines()
    header = "import time: self [us] | cumulative | imported package"
    assert lines.count(header) == 2  # the command line, then the daemon's interpreter
    said = [line for line in lines if not line.startswith("import time:")]
    assert len(said) == 1 and said[0].startswith("memcgctl: ") and "50-x.toml:1" in said[0]
    assert state(host) == before and not list(host.state.glob("daemon-*"))


def test_the_guardian_inherits_no_fd_but_stderr() -> None:
    r, w = os.pipe()
    try:
        os.set_inheritable(w, True)
        fds = main._inherited_fds()
        assert w in fds and r not in fds and all(fd > 2 for fd in fds)
    finally:
        os.close(r)
        os.close(w)
