"""The recorder holds the daemon's log lines and journal records back while a victim
exits (issue 22), then writes them in order; nothing held is lost at close."""

from __future__ import annotations

import io
import signal
import threading
from collections.abc import Iterable

import pytest

from memcgctl.actions.kill import Killer
from memcgctl.daemon.dying import Dying
from memcgctl.daemon.journaling import JournalWriter, Kills, Recorder
from memcgctl.logic.priority import select_priority_brief
from memcgctl.render.logprio import Priority
from memcgctl.state.journal import Journal
from memcgctl.vocab.records import Event, daemon_record, user_kill, utc_now_iso
from tests.fakehost import FakeHost
from tests.fakesignal import RecordingSignaller
from tests.test_daemon_core import jobs
from tests.test_daemon_plan import JOBS


def kill_of(pid: int) -> Event:
    return user_kill(
        time=utc_now_iso(),
        cgroup="/jobs",
        pid=pid,
        comm="x",
        signal="SIGKILL",
        mechanism="pidfd",
        target="/jobs",
        by="daemon",
    )


def test_a_plain_line_said_while_holding_comes_after_the_held_records(
    fake_v1: FakeHost,
) -> None:
    """The looks resume before the kill's records are written (QUIET_S < HOLD_S): a
    line said meanwhile (a walk's debug line, a valve's step) waits in its place, so
    the log never shows it before the kill (tests/v2/test_walk_hold_v2.py saw a walk
    after oom_resolved printed before daemon_kill)."""
    journal, log = Journal(fake_v1.state), io.StringIO()
    rec = Recorder(journal, log)
    try:
        rec.hold(True)
        rec.emit(daemon_record("daemon_kill", "/jobs", pid=10))
        rec.line(Priority.DEBUG, "tree_walk", "/", why="no_watches")
        rec.emit(daemon_record("oom_resolved", "/jobs", by="daemon"))
        assert log.getvalue() == ""
        rec.hold(False)
        rec.line(Priority.INFO, "valve_raised", "/jobs")
        kinds = [ln.split()[0].lstrip("<0123456789>") for ln in log.getvalue().splitlines()]
        assert kinds == ["daemon_kill", "tree_walk", "oom_resolved", "valve_raised"]
    finally:
        rec.close()


def test_held_records_are_written_in_order_once_released(fake_v1: FakeHost) -> None:
    journal, log = Journal(fake_v1.state), io.StringIO()
    rec = Recorder(journal, log)
    try:
        rec.emit(daemon_record("daemon_took_over", "/jobs", delay_ms=0))
        rec.hold(True)
        rec.append([kill_of(10)])  # the kill's own record, appended during the signal
        rec.emit(daemon_record("under_oom", "/jobs", time="2000-01-01T00:00:00.000000Z"))
        rec.emit(daemon_record("daemon_kill", "/jobs", pid=10))
        assert log.getvalue().count("\n") == 1  # only the line before the hold
        rec.hold(True)  # a second victim meanwhile: one hold
        rec.hold(False)
        lines = log.getvalue().splitlines()
        assert [ln.split()[0].lstrip("<0123456789>") for ln in lines] == [
            "daemon_took_over",
            "under_oom",
            "daemon_kill",
        ]
    finally:
        rec.close()
    kinds = [(e["kind"], e.get("pid")) for e in journal.read()]
    assert kinds == [
        ("daemon_took_over", None),
        ("user_kill", 10),
        ("under_oom", None),
        ("daemon_kill", 10),
    ]
    under = next(e for e in journal.read() if e["kind"] == "under_oom")
    assert under["time"] == "2000-01-01T00:00:00.000000Z"  # the episode's start, kept


def test_records_held_at_close_reach_the_journal(fake_v1: FakeHost) -> None:
    journal, log = Journal(fake_v1.state), io.StringIO()
    rec = Recorder(journal, log)
    rec.hold(True)
    rec.emit(daemon_record("daemon_kill", "/jobs", pid=10))
    rec.append([kill_of(10)])
    rec.close()  # the daemon stopped right after the signal
    assert "daemon_kill" in log.getvalue()
    assert [e["kind"] for e in journal.read()] == ["daemon_kill", "user_kill"]


def test_a_victim_without_a_pidfd_to_spare_is_still_killed_and_reaped_at_once(
    fake_v1: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The signal goes through the pidfd that then watches the exit; when none could be
    taken (out of fds), the killer still signals through its own, checked the same way,
    and reaps at once: no pidfd is kept to reap it after the quiet."""
    host = jobs(fake_v1)
    env = host.env()
    sig = RecordingSignaller(host, lethal=frozenset())  # it takes its time dying
    dying = Dying()
    monkeypatch.setattr(dying, "pin", lambda pid: None)
    rec = Recorder(Journal(host.state), io.StringIO())
    try:
        kills = Kills(Killer(env.fs, env.proc, sig, self_pid=999_999), dying, rec)
        decision = select_priority_brief(env.snapshot(JOBS, lazy=True), JOBS, ())
        assert decision.victim is not None and decision.victim.pid == 10
        assert kills.kill(decision) == [10]
        assert sig.sent == [(10, signal.SIGKILL)] and sig.released == [10]
        assert 10 not in dying  # nothing kept: counted once by the journal, not re-sent
    finally:
        rec.close()


class GatedJournal(Journal):
    """A journal whose appends wait for the test (a slow disk)."""

    gate: threading.Event

    def append(self, records: Iterable[Event], timeout: float | None = None) -> list[Event]:
        self.gate.wait(30)
        return super().append(records, timeout)


def test_close_waits_for_the_writer_but_gives_up_after_its_timeout(fake_v1: FakeHost) -> None:
    """The writer is a bare ``_thread`` (no threading module in the daemon, issue 22):
    close() still waits for its last append, and still returns if that never ends."""
    journal = GatedJournal(fake_v1.state)
    journal.gate = threading.Event()
    writer = JournalWriter(journal, warn=lambda text: None)
    writer.put([kill_of(10)])
    writer.close(timeout=0.2)  # the append is stuck: close gives up, nothing written
    assert list(journal.read()) == []
    journal.gate.set()
    writer.close()  # the thread ends after its append: close returns once it has
    assert [e["kind"] for e in journal.read()] == ["user_kill"]
    writer.close()  # and again at once
