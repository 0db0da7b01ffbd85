"""One validated, frozen DaemonConfig: what the command line builds, its defaults (the
valve's and the core's come from it), and every bad value refused with one stderr line
and exit 2 before the daemon touches anything."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from memcgctl.cli import cli
from memcgctl.daemon import main
from memcgctl.daemon.config import DaemonConfig, systemd_env
from memcgctl.daemon.core import Settings
from memcgctl.daemon.valve import HostLines, Tuning
from memcgctl.env import Env
from memcgctl.vocab import structs
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import UsageProblem
from tests.fakehost import FakeHost
from tests.test_cli_foundation import state
from tests.test_rules_unit import rules_dir


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    fake_v1.cgroup("/batch", limit=512 << 20, delay_ms=1000)
    fake_v1.process(200, "/batch", comm="worker", rss_anon_kb=50_000)
    return fake_v1


def run(host: FakeHost, *args: str) -> Result:
    return CliRunner().invoke(cli, ["daemon", *args], env=host.cli_env())


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[DaemonConfig]:
    """The configs the command hands to the daemon (which then does not run)."""
    seen: list[DaemonConfig] = []
    monkeypatch.setattr(main, "run", lambda env, config: seen.append(config))
    return seen


def test_defaults_are_the_valves_and_the_cores() -> None:
    config = DaemonConfig()
    assert config.tuning() == Tuning()
    assert config.host_lines == HostLines()
    assert (config.grace, config.max_rounds, config.dry_run) == tuple(
        getattr(Settings(), f.name) for f in structs.fields(Settings)
    )


def test_the_command_line_defaults_build_the_default_config(
    host: FakeHost, started: list[DaemonConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("UNRELATED", "x")
    r = run(host)
    assert r.exit_code == 0, r.output
    [config] = started
    assert dict(config.systemd_env) == {
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "WATCHDOG_USEC": "10000000",
    }
    assert structs.replace(config, systemd_env=DaemonConfig().systemd_env) == DaemonConfig()


def test_options_reach_the_config(host: FakeHost, started: list[DaemonConfig]) -> None:
    argv = [
        *("--root", "/batch", "--policy", "kernel", "--grace", "1.5s", "--max-rounds", "5"),
        *("--host-short", "20%", "--host-critical", "0.05", "--headroom", "25%"),
        *("--no-freeze", "--psi-stall", "200ms", "--psi-window", "2s", "--rescan", "250ms"),
        *("--pre-kill", "true", "--post-kill", "false", "--hook-timeout", "300ms"),
        *("--no-guardian", "--no-mlock", "--dry-run"),
    ]
    r = run(host, *argv)
    assert r.exit_code == 0, r.output
    [c] = started
    assert (c.root, c.policy, c.grace, c.max_rounds) == ("/batch", "kernel", 1.5, 5)
    assert (c.host_short, c.host_critical, c.headroom, c.freeze) == (0.2, 0.05, 0.25, False)
    assert (c.psi_stall_us, c.psi_window_us, c.rescan) == (200_000, 2_000_000, 0.25)
    assert (c.pre_kill, c.post_kill, c.hook_timeout) == ("true", "false", 0.3)
    assert (c.guardian, c.mlock, c.dry_run, c.host_delay_ms) == ("none", False, True, None)
    assert c.tuning().host == HostLines(0.2, 0.05, 0.3)


@pytest.mark.parametrize(("text", "ms"), [("off", None), ("0", 0), ("1.5s", 1500)])
def test_host_delay(host: FakeHost, started: list[DaemonConfig], text: str, ms: int) -> None:
    assert run(host, "--host-delay", text).exit_code == 0
    assert started[0].host_delay_ms == ms


def test_the_config_is_frozen() -> None:
    with pytest.raises(structs.FrozenInstanceError):
        DaemonConfig().grace = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "fields",
    [
        {"policy": "random"},
        {"grace": -1.0},
        {"grace": math.nan},
        {"hook_timeout": math.inf},
        {"max_rounds": 0},
        {"rescan": 0.05},
        {"rescan": math.nan},
        {"headroom": 0.6},
        {"host_short": math.nan},
        {"host_critical": 0.2},
        {"psi_window_us": 100_000},
        {"psi_stall_us": 0},
        {"host_delay_ms": 0, "root": CgroupPath("/batch")},
    ],
)
def test_bad_values_are_usage_problems(fields: dict[str, object]) -> None:
    with pytest.raises(UsageProblem):
        DaemonConfig(**fields)  # type: ignore[arg-type]


BAD = [
    # (argv, expected fragment of the one stderr line); all exit 2
    (["--grace", "5"], "give a unit"),
    (["--grace", "soon"], "not a duration"),
    (["--grace", "25h"], "longer than 24h"),
    (["--hook-timeout", "1"], "give a unit"),
    (["--host-delay", "٣s"], "not a duration"),
    (["--host-delay", "1s", "--root", "/batch"], "--host-delay needs --root /"),
    (["--rescan", "50ms"], "--rescan 50ms: at least 100ms"),
    (["--psi-window", "200ms"], "PSI: need 0 < --psi-stall <= --psi-window"),
    (["--psi-stall", "2s", "--psi-window", "1s"], "PSI: need"),
    (["--psi-stall", "0"], "PSI: need"),
    (["--headroom", "60%"], "--headroom 0.6: a share such as 10% (above 1%, at most 50%)"),
    (["--headroom", "0%"], "--headroom"),
    (["--headroom", "１0%"], "a share such as 10% or 0.1"),
    (["--host-short", "abc"], "a share such as 10% or 0.1"),
    (["--host-short", "5%", "--host-critical", "6%"], "need 0 < --host-critical < --host-short"),
    (["--host-critical", "0"], "--host-critical 0: a share"),
    (["--max-rounds", "0"], "Invalid value"),
    (["--policy", "random"], "Invalid value"),
]


@pytest.mark.parametrize(("argv", "fragment"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input(
    host: FakeHost, started: list[DaemonConfig], argv: list[str], fragment: str
) -> None:
    before = state(host)
    r = run(host, *argv)
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("memcgctl: ")
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert fragment in r.stderr
    assert started == [] and state(host) == before


def test_systemd_env_keeps_only_systemds_variables() -> None:
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_PID": "1", "HOME": "/root"}
    assert dict(systemd_env(env)) == {"NOTIFY_SOCKET": "@x", "WATCHDOG_PID": "1"}


def test_release_lines_say_when_there_is_nothing(host: FakeHost) -> None:
    env = Env(cgroup_root=host.cgroot, proc_root=host.proc, state_dir=host.state)
    assert list(main.release(env, CgroupPath("/batch"), dry_run=True)) == [
        "/batch: would release nothing (no marks or claims of stopped daemons)"
    ]


# -- what guards the daemon ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "mode"),
    [
        ([], "process"),
        (["--guardian", "systemd"], "systemd"),
        (["--guardian=none"], "none"),
        (["--no-guardian"], "none"),  # what units written before --guardian pass
        (["--no-guardian", "--guardian", "none"], "none"),
    ],
)
def test_guardian_option(
    host: FakeHost, started: list[DaemonConfig], argv: list[str], mode: str
) -> None:
    r = run(host, *argv)
    assert r.exit_code == 0, r.output
    assert started[0].guardian == mode


def test_no_guardian_with_another_guardian_is_refused(
    host: FakeHost, started: list[DaemonConfig]
) -> None:
    r = run(host, "--no-guardian", "--guardian", "process")
    assert r.exit_code == 2 and r.stdout == "" and started == []
    assert r.stderr.splitlines() == [
        "memcgctl: --no-guardian and --guardian=process: give one of them"
    ]


@pytest.mark.parametrize(
    ("mode", "environ", "process", "warned"),
    [
        ("process", {}, True, False),
        ("none", {}, False, False),
        # the installed unit: Type=notify with WatchdogSec=, WATCHDOG_PID is ours
        ("systemd", {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "10000000"}, False, False),
        (
            "systemd",
            {"NOTIFY_SOCKET": "@n", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "OURS"},
            False,
            False,
        ),
        # no watchdog (Type=simple, WatchdogSec= unset, or not systemd at all): a process
        ("systemd", {}, True, True),
        ("systemd", {"NOTIFY_SOCKET": "/run/n"}, True, True),
        ("systemd", {"WATCHDOG_USEC": "10000000"}, True, True),
        # a watchdog meant for another process (a parent's, leaked into our environment)
        (
            "systemd",
            {"NOTIFY_SOCKET": "/run/n", "WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"},
            True,
            True,
        ),
    ],
)
def test_guardian_process_only_without_systemds_watchdog(
    capsys: pytest.CaptureFixture[str],
    mode: str,
    environ: dict[str, str],
    process: bool,
    warned: bool,
) -> None:
    import os

    from memcgctl.daemon.sdnotify import Notifier

    environ = {k: str(os.getpid()) if v == "OURS" else v for k, v in environ.items()}
    assert main.guardian_process(mode, Notifier(environ)) is process
    err = capsys.readouterr().err.splitlines()
    assert len(err) == (1 if warned else 0), err
    if warned:
        assert err[0].startswith("<4>--guardian=systemd without systemd's watchdog")


def test_bad_rules_stop_the_daemon_before_it_takes_anything_over(
    host: FakeHost, tmp_path: Path
) -> None:
    """The daemon's own --rules (DaemonConfig.rules_dir) are read before any claim."""
    d = rules_dir(tmp_path, {"50-x.toml": "[[rule]]\ncomm = 'a'\nbadness = -1\n"})
    before = state(host)
    r = run(host, "--rules", str(d), "--guardian=none", "--no-mlock")
    assert r.exit_code == 2, r.output
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and "50-x.toml:1" in r.stderr
    assert state(host) == before and not list(host.state.glob("daemon-*"))
