"""What the daemon's ports do and record: the kills (a victim, or every task of a
cgroup, through the killer), each journaled as a ``user_kill`` by the daemon; every
decision of the core as one log line on stderr with a syslog priority and one journal
record; and the journal writer thread that appends those records, so that a kill never
waits on the journal.  Three parts of the real ports (``daemon/ports.py``), each built
with what it needs: the :class:`Recorder` (log stream + journal writer), the
:class:`Kills` (killer + the dying victims + a recorder) and the :class:`Troubles`
(the errors the ports carry on after, each said once).
"""

from __future__ import annotations

import _thread
import contextlib
import signal
import time
from collections.abc import Callable

from memcgctl.actions.kill import Killer
from memcgctl.actions.killreport import PIDFD
from memcgctl.daemon.dying import Dying
from memcgctl.logic.decision import Decision
from memcgctl.render.logprio import Priority, prefixed
from memcgctl.render.safetext import log_value
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.errors import MemcgctlError
from memcgctl.vocab.records import (
    DaemonRecord,
    Event,
    daemon_record,
    journaled,
    user_kill,
    utc_now_iso,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # the same classes (older typeshed has no _queue)
    from queue import Empty, SimpleQueue
    from typing import Any, TextIO
else:  # queue's own SimpleQueue, without the queue module and its threading
    from _queue import Empty, SimpleQueue

_PRIORITY = {
    "daemon_kill": Priority.WARNING,
    "rules_rejected": Priority.ERR,
    "daemon_escalated": Priority.WARNING,
    "under_oom": Priority.NOTICE,
    "no_victim": Priority.ERR,
    "daemon_error": Priority.ERR,
    "valve_frozen": Priority.WARNING,
    "kernel_kill": Priority.WARNING,
    "tree_watch_off": Priority.WARNING,  # daemon/treewatch.py: a walk per rescan again
}
# ``where`` of the daemon_error records of :class:`Troubles`: errors the daemon carries
# on after (a warning), not the unexpected ones the core reports (an error)
CARRIED_ON = frozenset({"level", "setting", "restore"})


def priority_of(event: DaemonRecord) -> Priority:
    kind = str(event["kind"])
    if kind == "daemon_error" and event.get("where") in CARRIED_ON:
        return Priority.WARNING
    return _PRIORITY.get(kind, Priority.INFO)


class JournalWriter:
    """Appends to the journal from a thread of its own, so that a held journal lock
    (another user cannot hold it: statedir.py; a slow disk can) delays the record, never
    the next kill.  Records wait in memory (at most MAX_PENDING) and are retried; on
    close, what is left gets one last bounded try."""

    MAX_PENDING = 10_000
    TIMEOUT = 2.0

    def __init__(self, journal: Journal, warn: Callable[[str], None]) -> None:
        self.journal = journal
        self.warn = warn
        self._queue: SimpleQueue[list[Event] | None] = SimpleQueue()
        self._pending: list[Event] = []
        # _thread, not threading (issue 22: threading and queue are 0.15 MiB the daemon
        # keeps resident): a thread the interpreter does not wait for at exit, as
        # ``daemon=True``; ``_running`` is held until it ends, for :meth:`close`
        self._running = _thread.allocate_lock()
        self._running.acquire()
        _thread.start_new_thread(self._main, ())

    def put(self, records: list[Event]) -> None:
        self._queue.put(records)

    def _main(self) -> None:
        try:
            self._run()
        finally:
            self._running.release()

    def _run(self) -> None:
        failing = False
        while True:
            try:
                item = self._queue.get(timeout=1.0 if self._pending else None)
            except Empty:
                item = []
            if item is None:
                self._flush(failing)
                return
            self._pending += item
            while True:  # take whatever else is queued: one append for a burst
                try:
                    more = self._queue.get_nowait()
                except Empty:
                    break
                if more is None:
                    self._flush(failing)
                    return
                self._pending += more
            failing = not self._flush(failing)

    def _flush(self, failing: bool) -> bool:
        if not self._pending:
            return True
        try:
            self.journal.append(self._pending, timeout=self.TIMEOUT)
        except (MemcgctlError, OSError) as exc:
            if not failing:
                self.warn(f"{exc}; {len(self._pending)} record(s) kept for a retry")
            del self._pending[: max(len(self._pending) - self.MAX_PENDING, 0)]
            return False
        self._pending = []
        return True

    def close(self, timeout: float = 2 * TIMEOUT + 1) -> None:
        self._queue.put(None)
        if self._running.acquire(timeout=timeout):
            self._running.release()


class Recorder:
    """What the daemon says: one log line per event on its log stream (stderr, with a
    syslog priority journald reads) and the journal records, appended by a
    :class:`JournalWriter` of its own."""

    def __init__(self, journal: Journal, log: TextIO) -> None:
        self.log = log
        # (the writer's thread says its trouble at once: it never joins the held lines)
        self.writer = JournalWriter(
            journal,
            lambda text: self._write(
                self._text(Priority.WARNING, "journal_failed", "-", {"error": text})
            ),
        )
        # held while a victim exits (issue 22): what was emitted, appended or said
        # meanwhile (a plain log line: its text), in order; None: not holding
        self._held: list[tuple[DaemonRecord, Event] | list[Event] | str] | None = None

    def hold(self, on: bool) -> None:
        """Hold the log lines and records back (on), or write what was held, in order
        (off): right after a signal the victim's exit needs the CPU, not us."""
        if on:
            if self._held is None:
                self._held = []
            return
        held, self._held = self._held, None
        if not held:
            return
        records: list[Event] = []
        for item in held:
            if isinstance(item, str):
                self._write(item)
            elif isinstance(item, list):
                records += item
            else:
                self._line_of(item[0])
                records.append(item[1])
        self.writer.put(records)  # one wake-up of the writer for all of them

    def emit(self, event: DaemonRecord) -> None:
        """A decision of the core: its log line and its journal record."""
        if self._held is not None:
            self._held.append((event, journaled(event)))  # its time: now, not when written
            return
        self._line_of(event)
        self.append([journaled(event)])

    def _line_of(self, event: DaemonRecord) -> None:
        """Write event's log line."""
        self.line(
            priority_of(event),
            str(event["kind"]),
            str(event["cgroup"]),
            **{k: v for k, v in event.items() if k not in ("kind", "cgroup")},
        )

    def append(self, records: list[Event]) -> None:
        """Hand records to the journal writer: a kill never waits on the journal."""
        if self._held is not None:
            self._held.append(records)
            return
        self.writer.put(records)

    def line(self, prio: Priority, kind: str, cg: str, **fields: Any) -> None:
        """One line per event on the log stream, with a syslog priority prefix journald
        reads; values another user controls (cgroup names, comm) are quoted.  While
        holding, held in its place among the records (the looks resume before the
        records are written: their lines must not come before the kill's)."""
        text = self._text(prio, kind, cg, fields)
        if self._held is not None:
            self._held.append(text)
            return
        self._write(text)

    @staticmethod
    def _text(prio: Priority, kind: str, cg: str, fields: dict[str, Any]) -> str:
        parts = [prefixed(prio, f"{kind} cgroup={log_value(cg)}")]
        parts += [
            f"{k}={log_value(' / '.join(map(str, v)) if isinstance(v, list) else v)}"
            for k, v in fields.items()
        ]
        return " ".join(parts)

    def _write(self, text: str) -> None:
        with contextlib.suppress(OSError):  # stderr gone: keep enforcing anyway
            self.log.write(text + "\n")
            self.log.flush()

    def close(self) -> None:
        """The journal writer's last flush (bounded), after the last record; what was
        held is written first."""
        self.hold(False)
        self.writer.close()


class Kills:
    """The daemon's kills (a victim, or every task of a cgroup) through the killer, each
    journaled as a ``user_kill`` by the daemon; a victim sent SIGKILL is remembered in
    ``dying`` until it has exited, and not sent (nor counted) again."""

    def __init__(self, killer: Killer, dying: Dying, recorder: Recorder) -> None:
        self.killer = killer
        self.dying = dying
        self.recorder = recorder
        # a standing plan's victim, pinned when the plan was chosen: OOM root -> (pid,
        # pidfd), one per managed memcg (issue 22: at the event, only the signal)
        self._planned: dict[CgroupPath, tuple[int, int]] = {}
        # the plan the check has just found holding, its victim read in its cgroup after
        # the pin: (the decision itself, (pid, pidfd)); only its own kill uses it
        self._listed: tuple[Decision, tuple[int, int]] | None = None

    def pin_plan(self, decision: Decision) -> None:
        """Hold a pidfd on a standing plan's victim (the one held for its OOM root is
        kept while it names the same pid and has not exited, otherwise replaced)."""
        victim = decision.victim
        if victim is None or decision.kill_group is not None:
            return
        held = self._planned.get(decision.oom_root)
        if held is not None:
            if held[0] == victim.pid and not self.killer.signaller.exited(held[1]):
                return
            self.unpin(decision.oom_root)
        pin = self.dying.pin(victim.pid)
        if pin is not None:
            self._planned[decision.oom_root] = (victim.pid, pin)

    def checked(self, decision: Decision | None) -> None:
        """decision's victim was read in its cgroup just now (the standing plan's
        check at the event), after its pin: its kill need not read that again.  None:
        nothing was (the last check failed)."""
        self._listed = None
        if decision is not None and decision.victim is not None:
            held = self._planned.get(decision.oom_root)
            if held is not None and held[0] == decision.victim.pid:
                self._listed = (decision, held)

    def pinned(self) -> dict[CgroupPath, int]:
        """OOM root -> the standing plan's victim pinned there."""
        return {root: pid for root, (pid, _) in self._planned.items()}

    def unpin(self, root: CgroupPath | None) -> None:
        """Close the pin held for a plan in ``root`` (None: every one)."""
        for key in [k for k in self._planned if root is None or k == root]:
            _, fd = self._planned.pop(key)
            if self._listed is not None and self._listed[1][1] == fd:
                self._listed = None
            self.dying.discard(fd)

    def kill(self, decision: Decision) -> list[int]:
        listed, self._listed = self._listed, None
        if decision.kill_group is not None:
            return self.kill_all(decision.kill_group)
        victim = decision.victim
        if victim is None or victim.pid in self.dying:
            return []  # a kill already sent is not sent (nor counted) again
        held = self._planned.pop(decision.oom_root, None)
        # the standing plan's victim, pinned when chosen and read in its cgroup by the
        # check for this very decision just now: the signal alone (a pid that names
        # another process by now is not hit: the pinned one has died, ESRCH)
        mine = (
            held is not None
            and listed is not None
            and listed[0] is decision
            and listed[1] == held
            and held[0] == victim.pid
        )
        if mine and held is not None:
            pin: int | None = held[1]
        else:
            if held is not None:
                self.dying.discard(held[1])
            # one pidfd: the signal goes through the one that then watches the exit.
            # None (gone, or no fd to spare): the killer tries with its own and reaps
            # at once, since no pidfd is kept to reap it later
            pin = self.dying.pin(victim.pid)
        try:
            ok = self.killer.kill_process(
                victim.pid,
                victim.cgroup,
                signal.SIGKILL,
                exact=True,
                handle=pin,
                release=pin is None,
                listed=mine,
            )
        except MemcgctlError as exc:
            self.dying.discard(pin)
            self.recorder.line(
                Priority.ERR, "kill_failed", victim.cgroup, pid=victim.pid, error=str(exc)
            )
            return []
        if not ok:
            self.dying.discard(pin)
            return []
        self.dying.add(victim.pid, pin)
        self._journal([(victim.pid, victim.comm, victim.cgroup, PIDFD)], decision.oom_root)
        return [victim.pid]

    def reap(self, pids: list[int]) -> None:
        """process_mrelease the victims among pids that are still exiting: not at the
        signal (the victim frees its own memory then, on a CPU we leave it), but when
        it has not exited within the quiet after it (stuck in the kernel)."""
        for _, fd in self.dying.handles(pids):
            self.killer.signaller.release(fd)

    def kill_all(self, cg: CgroupPath) -> list[int]:
        sent = self.dying.pids()  # killed before: signalled again, counted once
        try:
            report = self.killer.kill_all(cg, timeout=5.0)
        except MemcgctlError as exc:
            self.recorder.line(Priority.ERR, "kill_all_failed", cg, error=str(exc))
            return []
        killed = [k for k in report.killed if k.pid not in sent]
        self._journal([(k.pid, k.comm, k.cgroup, k.mechanism) for k in killed], cg)
        return [k.pid for k in killed]

    def _journal(self, killed: list[tuple[int, str, CgroupPath, str]], target: CgroupPath) -> None:
        """(pid, comm, cgroup, mechanism) of each process killed (SIGKILL)."""
        now = utc_now_iso()
        records: list[Event] = [
            user_kill(
                time=now,
                cgroup=cg,
                pid=pid,
                comm=comm,
                signal="SIGKILL",
                mechanism=mechanism,
                target=target,
                by="daemon",
            )
            for pid, comm, cg, mechanism in killed
        ]
        self.recorder.append(records)


class Troubles:
    """The errors the ports carry on after: a file they cannot read (``memory.current``,
    a setting), a knob they cannot restore.  Each is said as a ``daemon_error`` record
    (log line at warning priority, journal, the status counts) once per cgroup and
    condition (where, error type, errno) while it lasts; said again when it comes back
    after a good read (:meth:`ok`), but at most once per :data:`REPEAT_S` per cgroup.
    A cgroup or process that went away (``Vanished``) is normal: never said here."""

    REPEAT_S = 60.0
    _PRUNE_AT = 1024  # cgroups remembered before those said long ago are forgotten

    def __init__(
        self, emit: Callable[[DaemonRecord], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.emit = emit
        self.clock = clock
        # (where, cgroup) -> the conditions said there that have not cleared yet
        self._said: dict[tuple[str, str], set[tuple[str, int | None]]] = {}
        self._last: dict[str, float] = {}  # cgroup -> when something was said last

    def failed(self, where: str, cg: Scope, exc: BaseException) -> None:
        assert where in CARRIED_ON, where
        condition = (type(exc).__name__, getattr(exc, "errno", None))
        said = self._said.setdefault((where, str(cg)), set())
        if condition in said:
            return
        now = self.clock()
        last = self._last.get(str(cg))
        if last is not None and now - last < self.REPEAT_S:
            return  # rate-limited: said once the period is over, if it lasts
        said.add(condition)
        if len(self._last) >= self._PRUNE_AT:
            self._last = {k: t for k, t in self._last.items() if now - t < self.REPEAT_S}
        self._last[str(cg)] = now
        error = f"{type(exc).__name__}: {exc}"[:500]
        self.emit(daemon_record("daemon_error", str(cg), where=where, error=error))

    def ok(self, where: str, cg: Scope) -> None:
        """cg was read (or restored) fine at ``where``: its conditions there cleared."""
        if self._said:
            self._said.pop((where, str(cg)), None)
