"""The follower's ordering and once-only rules, and the journal tail, on fixture trees."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.hierarchy import hierarchy_at
from memcgctl.state.journal import Journal
from memcgctl.state.journallines import JournalTail
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.records import Event
from memcgctl.watch.follower import NOTIFICATION_HOLD_S, Follower
from tests.fakehost import FakeHost


class StubWatch:
    """An eventfd watch whose signals the test sends by calling on_eventfd."""

    def __init__(self, cg: str) -> None:
        self.cg = cg

    def drain(self) -> None:
        pass


class FileKmsg:
    """A kernel log that is no device (a saved file): not polled, nothing new."""

    is_device = False

    def read_available(self) -> list[bytes]:
        return []


def follower(host: FakeHost, seen: list[Event], kmsg: Any = None) -> Follower:
    return Follower(
        CgroupFs(hierarchy_at(host.cgroot)),
        CgroupPath("/"),
        kmsg,
        1_700_000_000,
        "boot",
        seen.append,
    )


def test_a_burst_of_eventfd_signals_is_one_pair(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/job", under_oom=False)
    seen: list[Event] = []
    f = follower(fake_v1, seen)
    watch = StubWatch("/job")
    t0 = time.monotonic()
    f.on_eventfd(watch)  # type: ignore[arg-type]
    f.check_resolved(CgroupPath("/job"), now=t0 + 0.01)  # under_oom already 0, but too soon
    f.on_eventfd(watch)  # type: ignore[arg-type]  # the same OOM signals again
    f.check_resolved(CgroupPath("/job"), now=t0 + 0.02)
    f.check_resolved(CgroupPath("/job"), now=time.monotonic() + f.resolve_check_s)
    f.flush(force=True)
    assert [e["kind"] for e in seen] == ["under_oom", "oom_resolved"]


def test_flush_orders_by_time_and_dedups(fake_v1: FakeHost) -> None:
    seen: list[Event] = []
    f = follower(fake_v1, seen)
    f._out({"time": "2024-01-01T00:00:02Z", "kind": "user_kill", "source": "journal"})
    f._out({"time": "2024-01-01T00:00:01Z", "kind": "oom_kill", "source": "kmsg", "dedup": "b:1"})
    f._out(
        {"time": "2024-01-01T00:00:03Z", "kind": "oom_kill", "source": "journal", "dedup": "b:1"}
    )
    f.flush()
    assert [e["kind"] for e in seen] == ["oom_kill", "user_kill"]


def test_notifications_wait_for_the_kernel_log(fake_v1: FakeHost) -> None:
    """An eventfd notification read before the kernel logged the kill is held back
    briefly, and a later-stamped event does not overtake it."""
    seen: list[Event] = []
    f = follower(fake_v1, seen, kmsg=FileKmsg())  # a kernel log exists: hold
    f._out({"time": "2024-01-01T00:00:05Z", "kind": "under_oom", "source": "eventfd"})
    f._out({"time": "2024-01-01T00:00:06Z", "kind": "user_kill", "source": "journal"})
    f.flush()
    assert seen == []
    f._out({"time": "2024-01-01T00:00:04Z", "kind": "oom_kill", "source": "kmsg"})
    f.flush()
    assert [e["kind"] for e in seen] == ["oom_kill"]  # earlier than the held one: out
    time.sleep(NOTIFICATION_HOLD_S + 0.01)
    f.flush()
    assert [e["kind"] for e in seen] == ["oom_kill", "under_oom", "user_kill"]


def test_journal_tail_reads_whole_new_lines_and_follows_rotation(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    j = Journal(state, max_bytes=300)
    j.append([{"time": "2024-01-01T00:00:00Z", "kind": "user_kill", "pid": 1}])
    tail = JournalTail(j)
    assert tail.read_new() == []  # only what comes after the tail was made
    j.append([{"time": "2024-01-01T00:00:01Z", "kind": "manual_kill", "pid": 2}])
    assert [r.get("pid") for r in tail.read_new()] == [2]
    with open(j.path, "ab") as fh:  # a writer in the middle of a line
        fh.write(b'{"time": "2024-01-01T00:00:02Z", "kind": "user_kill"')
    assert tail.read_new() == []
    with open(j.path, "ab") as fh:
        fh.write(b', "pid": 3}\n')
    assert [r.get("pid") for r in tail.read_new()] == [3]
    # enough to rotate once (the journal rotates before a batch would pass its cap): the
    # tail reads the rest of the old file, then the new one
    for pid in range(4, 10):
        j.append([{"time": "2024-01-01T00:00:03Z", "kind": "user_kill", "pid": pid}])
    assert j.rotated.exists()
    assert [r.get("pid") for r in tail.read_new()] == list(range(4, 10))
