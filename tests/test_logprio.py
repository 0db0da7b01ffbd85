"""Syslog priority prefixes: made in one place (memcgctl.render.logprio)."""

from __future__ import annotations

import pathlib

from memcgctl.render.logprio import Priority, prefixed


def test_prefix_is_the_syslog_level_journald_reads() -> None:
    assert prefixed(Priority.ERR, "kill_failed x") == "<3>kill_failed x"
    assert prefixed(Priority.WARNING, "w") == "<4>w"
    assert prefixed(Priority.NOTICE, "") == "<5>"
    assert prefixed(Priority.INFO, "stopped") == "<6>stopped"


def test_no_module_writes_a_priority_prefix_by_hand() -> None:
    root = pathlib.Path(__file__).resolve().parent.parent / "memcgctl"
    offenders = [
        f"{path.name}: {line.strip()}"
        for path in root.rglob("*.py")
        if path.name != "logprio.py"
        for line in path.read_text().splitlines()
        if any(f'"<{n}>' in line or f"'<{n}>" in line for n in range(8)) or '"<{' in line
    ]
    assert offenders == []
