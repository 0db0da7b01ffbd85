"""The recorder holds the daemon's log lines and journal records back while a victim
exits (issue 22), then writes them in order; nothing held is lost at close."""

from __future__ import annotations

import io

from memcgctl.daemon.journaling import Recorder
from memcgctl.state.journal import Journal
from memcgctl.vocab.records import Event, daemon_record, user_kill, utc_now_iso
from tests.fakehost import FakeHost


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
