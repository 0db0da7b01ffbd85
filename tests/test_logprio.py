"""Syslog priority prefixes: made in one place (memcgctl.render.logprio)."""

from __future__ import annotations

from memcgctl.render.logprio import Priority, prefixed


def test_prefix_is_the_syslog_level_journald_reads() -> None:
    assert prefixed(Priority.ERR, "kill_failed x") == "<3>kill_failed x"
    assert prefixed(Priority.WARNING, "w") == "<4>w"
    assert prefixed(Priority.NOTICE, "") == "<5>"
    assert prefixed(Priority.INFO, "stopped") == "<6>stopped"
