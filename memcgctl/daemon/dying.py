"""Victims the daemon has already sent SIGKILL, until they have exited.

A victim stuck in the kernel (D state, the v1 freezer) does not die at once.  It must
count once: never chosen again, never signalled again, never journaled again.  Each is
held by a pidfd taken before the signal, so a recycled pid is never mistaken for it;
the pidfd turns readable when the process exits, and then it is forgotten.  The same
pidfd carries the signal (one ``pidfd_open`` per victim).  A victim that has not exited
within the core's quiet after the signal (``QUIET_S``) has its memory given back with
``process_mrelease`` then (``Kills.reap``), so it does not hold the next victim back
beyond ``--grace``.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Iterator, Mapping

from memcgctl.vocab import structs
from memcgctl.vocab.model import ProcessInfo, Snapshot


class _Hidden(Mapping[int, ProcessInfo]):
    """A snapshot's processes with the dying ones not killable, decided when a process
    is looked at: a lazy snapshot (issue 22) still reads only what the walk looks at."""

    def __init__(self, base: Mapping[int, ProcessInfo], dying: frozenset[int]) -> None:
        self._base = base
        self._dying = dying

    def __getitem__(self, pid: int) -> ProcessInfo:
        p = self._base[pid]
        return p._replace(killable=False) if pid in self._dying else p

    def __contains__(self, pid: object) -> bool:
        return pid in self._base

    def __iter__(self) -> Iterator[int]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)


class Dying:
    def __init__(self) -> None:
        self._fds: dict[int, int] = {}  # pid -> pidfd

    def pin(self, pid: int) -> int | None:
        """A pidfd on pid, taken before it is signalled (None: already gone)."""
        try:
            return os.pidfd_open(pid)
        except OSError:
            return None

    def add(self, pid: int, pidfd: int | None) -> None:
        if pidfd is None:
            return
        old = self._fds.pop(pid, None)
        if old is not None:
            os.close(old)
        self._fds[pid] = pidfd

    def discard(self, pidfd: int | None) -> None:
        if pidfd is not None:
            os.close(pidfd)

    def prune(self) -> None:
        """Forget those that have exited."""
        if not self._fds:
            return
        poller = select.poll()
        for fd in self._fds.values():
            poller.register(fd, select.POLLIN)
        gone = {fd for fd, _ in poller.poll(0)}
        for pid, fd in list(self._fds.items()):
            if fd in gone:
                del self._fds[pid]
                with contextlib.suppress(OSError):
                    os.close(fd)

    def __contains__(self, pid: object) -> bool:
        self.prune()
        return pid in self._fds

    def pids(self) -> set[int]:
        self.prune()
        return set(self._fds)

    def handles(self, pids: list[int]) -> list[tuple[int, int]]:
        """(pid, pidfd) of those of pids still exiting."""
        self.prune()
        return [(pid, self._fds[pid]) for pid in pids if pid in self._fds]

    def fds(self) -> list[int]:
        """The pidfds of those still exiting."""
        self.prune()
        return list(self._fds.values())

    def hide(self, snap: Snapshot) -> Snapshot:
        """snap with every dying victim no longer killable: no policy chooses it again."""
        dying = self.pids()
        if not dying:
            return snap
        return structs.replace(snap, processes=_Hidden(snap.processes, frozenset(dying)))

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = {}
