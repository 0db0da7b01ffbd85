"""Syslog priority prefixes for the daemon's stderr lines: the one place they are made.

Under systemd, stderr goes to the journal, and journald reads a leading ``<N>`` as the
line's syslog priority (sd-daemon(3), ``SyslogLevelPrefix=`` on by default) and strips it.
"""

from __future__ import annotations

from enum import IntEnum


class Priority(IntEnum):
    """The syslog levels memcgctl writes (``LOG_ERR`` … ``LOG_DEBUG`` of syslog(3))."""

    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


def prefixed(priority: Priority, line: str) -> str:
    """``line`` with the prefix journald reads: ``prefixed(Priority.WARNING, "x")`` is
    ``"<4>x"``."""
    return f"<{int(priority)}>{line}"
