"""A recording Signaller for unit tests: nothing real is ever signalled.

It works on a FakeHost: a pid "exists" while the fake /proc has it, and a signal in
``lethal`` removes the process from the fake host (as if it died at once).  ``on_open``
lets a test change the world between listing and signalling (pid leaves, is recycled).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterable

from tests.fakehost import FakeHost


class RecordingSignaller:
    def __init__(
        self,
        host: FakeHost,
        on_open: Callable[[int], None] | None = None,
        on_send: Callable[[int, int], None] | None = None,
        lethal: frozenset[int] = frozenset({signal.SIGKILL, signal.SIGTERM}),
        immortal: frozenset[int] = frozenset(),
    ) -> None:
        self.host = host
        self.on_open = on_open
        self.on_send = on_send
        self.lethal = lethal
        self.immortal = immortal
        self.sent: list[tuple[int, int]] = []  # (pid, signal)
        self.released: list[int] = []
        self.opened: list[int] = []
        self._handles: dict[int, tuple[int, int]] = {}  # handle -> (pid, start time)
        self._next = 1000

    def _identity(self, pid: int) -> int | None:
        p = self.host.processes.get(pid)
        return None if p is None else p.start_time

    def open(self, pid: int) -> int | None:
        start = self._identity(pid)
        if start is None:
            return None
        self.opened.append(pid)
        handle = self._next
        self._next += 1
        self._handles[handle] = (pid, start)
        if self.on_open is not None:
            self.on_open(pid)
        return handle

    def send(self, handle: int, sig: int) -> bool:
        pid, start = self._handles[handle]
        if self._identity(pid) != start:
            return False  # the process this handle names is gone (pid maybe reused)
        self.sent.append((pid, sig))
        if self.on_send is not None:
            self.on_send(pid, sig)
        if sig in self.lethal and pid not in self.immortal:
            self.host.remove_process(pid)
        return True

    def release(self, handle: int) -> None:
        self.released.append(self._handles[handle][0])

    def exited(self, handle: int) -> bool:
        pid, start = self._handles[handle]
        return self._identity(pid) != start

    def wait(self, handles: Iterable[int], timeout: float) -> set[int]:
        done = {h for h in handles if self.exited(h)}
        if not done:
            time.sleep(timeout)
        return done

    def close(self, handle: int) -> None:
        del self._handles[handle]

    def signalled(self) -> list[int]:
        return [pid for pid, _ in self.sent]
