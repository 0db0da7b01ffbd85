"""sd_notify(3) without libsystemd: tell systemd we are ready, alive, stopping.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``: an AF_UNIX datagram socket,
a path or (leading ``@``) an abstract name.  With ``WatchdogSec=`` it also passes
``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, the pid meant): a service that does not
send ``WATCHDOG=1`` within that interval is killed (and restarted, with
``Restart=on-failure``); ``ExecStopPost=memcgctl daemon --release`` then restores what
it held.  Ping at half the interval, as sd_watchdog_enabled(3) advises.

Standard library only; every failure is silent (no systemd: nothing to tell).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        return "\0" + path[1:]  # an abstract socket name
    return path if path.startswith("/") else None


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send ``state`` (``READY=1``, ``WATCHDOG=1``, ``STOPPING=1``, ``STATUS=…``, several
    joined by newlines) to systemd; False when there is no socket or sending failed."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    # only under systemd (a daemon started by hand keeps it out of memory), and the C
    # module alone: socket.py's enums of every constant were 0.25 MiB of the daemon's
    import _socket

    try:
        # non-blocking: a full queue (PID 1 not reading) drops this one, never holds the
        # daemon in sendto (where it stopped enforcing and did not hear SIGTERM)
        flags = _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC | _socket.SOCK_NONBLOCK
        s = _socket.socket(_socket.AF_UNIX, flags)
    except OSError:
        return False
    try:
        s.sendto(state.encode(), address)
    except OSError:
        return False
    finally:
        s.close()
    return True


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog interval in seconds systemd asked for, or None (no watchdog, or
    one meant for another process)."""
    e = os.environ if env is None else env
    usec, pid = e.get("WATCHDOG_USEC", ""), e.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1e6


class Notifier:
    """READY=1 once, then WATCHDOG=1 at half the interval: call :meth:`beat` from the
    main loop (a loop that hangs stops pinging, and systemd notices)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(os.environ if env is None else env)
        interval = watchdog_interval(self.env)
        self.every = interval / 2 if interval is not None else None
        self._next = 0.0

    @property
    def active(self) -> bool:
        return _address(self.env) is not None

    def ready(self, status: str = "") -> bool:
        return notify("READY=1" + (f"\nSTATUS={status}" if status else ""), self.env)

    def beat(self, now: float) -> float | None:
        """Ping if due; when to be called again at the latest (None: no watchdog)."""
        if self.every is None or not self.active:
            return None
        if now >= self._next:
            notify("WATCHDOG=1", self.env)
            self._next = now + self.every
        return self._next

    def stopping(self) -> bool:
        return notify("STOPPING=1", self.env)
