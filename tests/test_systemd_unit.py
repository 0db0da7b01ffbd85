"""The shipped systemd unit runs commands that exist, with the options it names."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from click.testing import CliRunner

from memcgctl.cli import cli

UNIT = Path(__file__).resolve().parent.parent / "contrib/systemd/memcgctl-daemon.service"


def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(UNIT.read_text())
    return cp


def test_unit_commands_exist_and_parse() -> None:
    svc = _unit()["Service"]
    for key in ("ExecStart", "ExecStopPost"):
        argv = shlex.split(svc[key])
        assert argv[:2] == ["/usr/bin/env", "memcgctl"]
        # --help after the real arguments: click parses them, then prints help
        r = CliRunner().invoke(cli, [*argv[2:], "--help"])
        assert r.exit_code == 0, (key, r.output)


def test_unit_protects_the_handler_and_releases_on_stop() -> None:
    svc = _unit()["Service"]
    assert svc["OOMScoreAdjust"] == "-1000"
    assert "--release" in svc["ExecStopPost"]
    assert svc["Restart"] == "always"
