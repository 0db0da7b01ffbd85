"""``memcgctl install-unit``: the unit's text, the command it runs, the file it writes.

systemd itself judges the text where ``systemd-analyze`` exists (``verify``: every
directive known, every ``Exec*=`` an executable); the guest suite (tests/systemd)
starts, stops, restarts and SIGKILLs the installed unit under a real systemd.
"""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from memcgctl import __version__
from memcgctl.cli import cli
from memcgctl.commands.installunit import _pythonpath
from memcgctl.render.unitfile import WATCHDOG_SEC, command_line, daemon_unit, memcgctl_command

REPO = Path(__file__).resolve().parent.parent


def _service(text: str) -> configparser.SectionProxy:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    return cp["Service"]


def _argv(value: str) -> list[str]:
    """An Exec*= value as systemd splits it (double quotes, backslash escapes; the
    words here have no % or $ to unescape)."""
    return shlex.split(value)


# ---------------------------------------------------------------- the command


def test_console_script_is_used_as_it_is(tmp_path: Path) -> None:
    venv_script = "/opt/venvs/m/bin/memcgctl"  # pipx/venv: the script, not its interpreter
    assert memcgctl_command(venv_script, "/usr/bin/python3", None, "/") == [venv_script]
    assert memcgctl_command("bin/memcgctl", "/usr/bin/python3", None, str(tmp_path)) == [
        str(tmp_path / "bin/memcgctl")
    ]
    assert memcgctl_command("./x/../bin/memcgctl", "/p", None, "/srv") == ["/srv/bin/memcgctl"]


def test_python_dash_m_keeps_the_interpreter_unresolved() -> None:
    # a venv's bin/python3 finds the venv's packages; the resolved base interpreter not
    argv0 = "/work/x/memcgctl/__main__.py"
    assert memcgctl_command(argv0, "/v/bin/python3", "/usr/bin/memcgctl", "/") == [
        "/v/bin/python3",
        "-m",
        "memcgctl",
    ]


def test_other_argv0_falls_back_to_path_then_to_the_interpreter() -> None:
    assert memcgctl_command("memcgctl", "/p/python3", "/usr/local/bin/memcgctl", "/") == [
        "/usr/local/bin/memcgctl"
    ]
    assert memcgctl_command("something", "/p/python3", None, "/") == [
        "/p/python3",
        "-m",
        "memcgctl",
    ]


# ---------------------------------------------------------------- the text


@pytest.mark.parametrize("notify", [True, False])
def test_unit_runs_the_daemon_and_releases_after_every_stop(notify: bool) -> None:
    cmd = ["/opt/m/bin/memcgctl", "--state-dir", "/var/lib/memcgctl"]
    svc = _service(daemon_unit(cmd, ["--root", "/batch", "--grace", "1s"], notify=notify))
    start, stop_post = _argv(svc["ExecStart"]), _argv(svc["ExecStopPost"])
    # under the unit systemd does the guardian's job (ExecStopPost=, and WatchdogSec= with
    # Type=notify); without a watchdog there is no guardian, as before
    guardian = "--guardian=systemd" if notify else "--guardian=none"
    assert start == [*cmd, "daemon", guardian, "--root", "/batch", "--grace", "1s"]
    # the release covers the same subtree and state directory, nothing else
    assert stop_post == [*cmd, "daemon", "--release", "--root", "/batch"]
    assert svc["Restart"] == "always"
    assert svc["OOMScoreAdjust"] == "-1000"
    assert svc["StandardError"] == "journal"
    assert svc["SyslogLevelPrefix"] == "yes"
    if notify:
        assert svc["Type"] == "notify"
        assert svc["NotifyAccess"] == "main"
        assert svc["WatchdogSec"] == f"{WATCHDOG_SEC}s"
    else:
        assert svc["Type"] == "simple"
        assert "WatchdogSec" not in svc


def test_root_given_with_equals_reaches_the_release() -> None:
    svc = _service(daemon_unit(["/m"], ["--root=/a"]))
    assert _argv(svc["ExecStopPost"]) == ["/m", "daemon", "--release", "--root=/a"]


def test_words_are_quoted_for_systemd() -> None:
    # systemd expands %-specifiers and $VARIABLES in Exec*=: both doubled; blanks quoted
    assert command_line(["/a b/memcgctl", "50%", "$HOME", 'q"\\']) == (
        '"/a b/memcgctl" 50%% $$HOME "q\\"\\\\"'
    )
    assert shlex.split(command_line(["/a b/m", "x;y", 'q"'])) == ["/a b/m", "x;y", 'q"']


def test_the_unit_commands_parse_as_memcgctl_commands() -> None:
    svc = _service(daemon_unit(["/m"], ["--root", "/batch", "--headroom", "12%"]))
    for key in ("ExecStart", "ExecStopPost"):
        argv = _argv(svc[key])[1:]
        r = CliRunner().invoke(cli, [*argv, "--help"])  # click parses them, then helps
        assert r.exit_code == 0, (key, r.output)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
@pytest.mark.parametrize("notify", [True, False])
def test_systemd_analyze_verifies_the_unit(tmp_path: Path, notify: bool) -> None:
    # ExecStart must be an executable: this interpreter with -m memcgctl
    text = daemon_unit([sys.executable, "-m", "memcgctl"], ["--root", "/a b"], notify=notify)
    unit = tmp_path / "memcgctl-daemon.service"
    unit.write_text(text)
    p = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0 and p.stderr == "", p.stderr
    bad = tmp_path / "bad.service"
    bad.write_text(text.replace("Type=", "Type=bogus", 1))
    p = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "bogus" in p.stderr  # the oracle does judge


# ---------------------------------------------------------------- the command line


def test_dry_run_prints_the_unit_of_this_memcgctl() -> None:
    r = CliRunner().invoke(cli, ["install-unit", "--dry-run", "--", "--root", "/batch"])
    assert r.exit_code == 0, r.output
    cmd = memcgctl_command(sys.argv[0], sys.executable, shutil.which("memcgctl"), os.getcwd())
    expected = daemon_unit(
        cmd,
        ["--root", "/batch"],
        pythonpath=_pythonpath(),
        version=__version__,
    )
    assert r.output == expected


def test_a_checkout_gets_its_pythonpath() -> None:
    # this test run imports memcgctl from the checkout (editable or PYTHONPATH)
    import memcgctl

    if "site-packages" in Path(memcgctl.__file__ or "").parts:
        pytest.skip("memcgctl is installed, not imported from a checkout")
    assert _pythonpath() == str(REPO)
    svc = _service(daemon_unit(["/m"], pythonpath=str(REPO)))
    assert svc["Environment"] == f"PYTHONPATH={REPO}"


def test_writes_the_file_atomically_mode_0644(tmp_path: Path) -> None:
    old = tmp_path / "memcgctl-daemon.service"
    old.write_text("old")
    r = CliRunner().invoke(
        cli, ["install-unit", "--unit-dir", str(tmp_path), "--no-reload", "--", "--root", "/b"]
    )
    if os.geteuid() != 0:
        assert r.exit_code == 4, r.output
        return
    assert r.exit_code == 0, r.output
    text = old.read_text()
    assert _argv(_service(text)["ExecStart"])[-2:] == ["--root", "/b"]
    assert stat.S_IMODE(old.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memcgctl-daemon.service"]
    assert "systemctl enable --now memcgctl-daemon" in r.output


def test_refuses_bad_names_and_non_settings(tmp_path: Path) -> None:
    runner = CliRunner()
    for args in (
        ["--name", "x"],
        ["--name", "../x.service"],
        ["--", "--release"],
        ["--", "--dry-run"],
    ):
        r = runner.invoke(cli, ["install-unit", "--unit-dir", str(tmp_path), *args])
        assert r.exit_code == 2, (args, r.output)
    assert list(tmp_path.iterdir()) == []


def test_missing_unit_dir_is_one_line_exit_1(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (non-root is refused before)")
    p = subprocess.run(
        [sys.executable, "-m", "memcgctl", "install-unit", "--unit-dir", str(tmp_path / "no")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert p.returncode == 1, p.stderr
    assert p.stderr.count("\n") == 1 and "no such directory" in p.stderr


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="this host runs systemd")
def test_daemon_reload_failure_is_one_line_exit_1(tmp_path: Path) -> None:
    """Here systemd is not PID 1: the file is written, then daemon-reload fails."""
    if os.geteuid() != 0 or shutil.which("systemctl") is None:
        pytest.skip("needs root and systemctl")
    p = subprocess.run(
        [sys.executable, "-m", "memcgctl", "install-unit", "--unit-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("memcgctl: systemctl daemon-reload failed"), p.stderr
    assert p.stderr.count("\n") == 1
    assert (tmp_path / "memcgctl-daemon.service").exists()
