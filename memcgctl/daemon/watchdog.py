"""The main loop's pulse, for those who watch the daemon: ``READY=1`` and
``WATCHDOG=1`` for systemd (:mod:`~memcgctl.daemon.sdnotify`), the heartbeat file for the
guardian (:mod:`~memcgctl.daemon.guardian`), and what to do when the guardian released
our marks while we were stopped or hung: forget what we held and take it over afresh.

:class:`Liveness` is the loop's ``until`` callback: called once per iteration, it never
stops the loop (it returns False).  :meth:`Liveness.due` is when the next pulse is due:
the loop sleeps no longer, and beats on the wake-ups it has anyway (no timer of its own
when another wake-up comes first)."""

from __future__ import annotations

from collections.abc import Callable

from memcgctl.daemon.guardian import Heartbeat
from memcgctl.daemon.sdnotify import Notifier
from memcgctl.vocab.structs import Protocol

RELEASED_BY_GUARDIAN = "the guardian released it while the daemon was stopped or hung"


class Core(Protocol):
    def rescan(self, now: float, starting: bool = False) -> None: ...

    def release_watches(self, why: str) -> None: ...


class Liveness:
    def __init__(
        self,
        core: Core,
        clock: Callable[[], float],
        notifier: Notifier,
        heartbeat: Heartbeat | None,
    ) -> None:
        self.core = core
        self.clock = clock
        self.notifier = notifier
        self.heartbeat = heartbeat
        self._ready = False
        self._due: float | None = None

    def due(self) -> float | None:
        """When the next pulse is due at the latest (the loop's clock); None: never."""
        return self._due

    def _beat(self, now: float) -> None:
        dues = [self.notifier.beat(now)]
        if self.heartbeat is not None:
            dues.append(self.heartbeat.beat(now))
        self._due = min((d for d in dues if d is not None), default=None)

    def pulse(self) -> None:
        """The loop is busy but working (a rescan walking thousands of cgroups): keep the
        heartbeat and systemd's watchdog fresh, so a long walk is not taken for a hang."""
        self._beat(self.clock())

    def __call__(self) -> bool:
        now = self.clock()
        if not self._ready:  # the first rescan is done: we are enforcing
            self._ready = True
            self.notifier.ready("enforcing")
        self._beat(now)
        if self.heartbeat is not None and self.heartbeat.released():
            self.core.release_watches(RELEASED_BY_GUARDIAN)
            self.core.rescan(self.clock(), starting=True)
            self.heartbeat.beat(self.clock(), force=True)
            self._beat(self.clock())
        return False

    def close(self) -> None:
        self.notifier.stopping()
        if self.heartbeat is not None:
            self.heartbeat.close()
