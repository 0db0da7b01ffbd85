"""The event records (memcgctl/vocab/records.py): constructors, the clock, the round trip
record → journal line → parsed record, and the one validating reader."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from memcgctl.state.journal import Journal
from memcgctl.vocab.records import (
    EPOCH_ISO,
    Event,
    counter_event,
    daemon_record,
    journal_copy,
    journaled,
    kernel_event,
    merged,
    notification,
    parse_record,
    user_kill,
    utc_file_stamp,
    utc_iso,
    utc_iso_before,
    utc_now_iso,
    with_source,
)

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# -- the clock ----------------------------------------------------------------------------


def test_one_format_microseconds_and_z() -> None:
    assert utc_iso(1_700_000_000.25) == "2023-11-14T22:13:20.250000Z"
    assert utc_iso(0) == EPOCH_ISO
    assert ISO.match(utc_now_iso())


def test_out_of_range_is_none_not_an_exception() -> None:
    assert utc_iso(1e20) is None
    assert utc_iso(float("nan")) is None


def test_iso_parses_back_to_the_same_instant() -> None:
    for ts in (0.0, 1_700_000_000.123456, 2_000_000_000.5):
        text = utc_iso(ts)
        assert text is not None
        assert text.endswith("Z")
        dt = datetime.fromisoformat(text[:-1] + "+00:00")  # 3.10's fromisoformat has no "Z"
        assert dt.utcoffset() == timedelta(0) and dt.timestamp() == pytest.approx(ts, abs=1e-6)


def datetime_utc(ts: float) -> datetime | None:
    """What the clock was before it did without datetime (issue 22: 0.3 MiB resident)."""
    try:
        return datetime.fromtimestamp(ts, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


@given(
    st.one_of(
        st.floats(min_value=-7e10, max_value=2.6e11),  # years 1 to 9999, and either side
        st.integers(0, 4_000_000_000).map(lambda s: s + 0.9999996),  # rounds into a carry
        st.integers(-(10**13), 10**13).map(lambda us: us / 1e6),  # microseconds and halves
        st.floats(allow_nan=True, allow_infinity=True),
    )
)
@example(1.9999996)
@example(-1.5)
@example(-0.0000005)
@example(253402300799.9999996)  # rounds into year 10000: no datetime holds it
@example(-62135596800.0)  # 0001-01-01
@example(-62135596800.5)
def test_the_clock_is_datetimes_to_the_microsecond(ts: float) -> None:
    dt = datetime_utc(ts)
    iso = None if dt is None else dt.isoformat(timespec="microseconds")
    assert utc_iso(ts) == (None if iso is None else iso.replace("+00:00", "Z"))
    stamp = (dt or datetime.fromtimestamp(0, timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    assert utc_file_stamp(ts) == stamp


def test_before_and_order() -> None:
    assert utc_iso_before(20.0, now=1_700_000_020.0) == utc_iso(1_700_000_000.0)
    # one width: strings compare in time order (--since, the merge rely on it)
    times = [utc_iso(t) or "" for t in (1.0, 9.5, 10.0, 1e9)]
    assert sorted(times) == times


# -- constructors ---------------------------------------------------------------------


def test_user_kill_keys_and_order() -> None:
    rec = user_kill(
        time="T",
        cgroup="/job/a",
        pid=7,
        comm="grow",
        signal="SIGKILL",
        mechanism="procs",
        target="/job",
        by="kill-all",
    )
    assert list(rec) == [
        "time", "kind", "cgroup", "source", "pid", "comm", "signal", "mechanism", "target", "by",
    ]  # fmt: skip
    assert rec["kind"] == "user_kill" and rec["source"] == "journal"
    manual = user_kill(
        cgroup="/j",
        pid=1,
        comm="x",
        signal="SIGTERM",
        mechanism="cgroup.kill",
        target="/j",
        by="kill-all",
        kind="manual_kill",
    )
    assert manual["kind"] == "manual_kill" and ISO.match(str(manual["time"]))


def test_kernel_event_head() -> None:
    ev = kernel_event("oom_kill", "/a", "T", 5, 1000, "boot:5")
    assert ev == {
        "time": "T",
        "kind": "oom_kill",
        "cgroup": "/a",
        "source": "kmsg",
        "seq": 5,
        "usec": 1000,
        "dedup": "boot:5",
    }


def test_notification_says_removed_only_when_it_was() -> None:
    ev = notification("under_oom", "/a", "eventfd")
    assert list(ev) == ["time", "kind", "cgroup", "source"] and ISO.match(str(ev["time"]))
    gone = notification("oom_resolved", "/a", "eventfd", removed=True)
    assert gone.get("removed") is True


def test_counter_event() -> None:
    ev = counter_event("oom", "/a", "memory.events.local", 2, 9, "T")
    assert list(ev) == ["time", "kind", "cgroup", "source", "file", "count", "total"]
    assert (ev["source"], ev.get("count"), ev.get("total")) == ("memory.events", 2, 9)


def test_daemon_record_and_its_journal_copy() -> None:
    rec = daemon_record("daemon_kill", "/jobs", pid=10, killed=[10])
    assert rec == {"kind": "daemon_kill", "cgroup": "/jobs", "pid": 10, "killed": [10]}
    copy = journaled(rec)
    assert list(copy)[:5] == ["time", "source", "by", "kind", "cgroup"]
    assert copy["source"] == "journal" and copy.get("by") == "daemon"
    # a record that says who ended an episode keeps its own "by"
    assert journaled(daemon_record("oom_resolved", "/j", by="userspace")).get("by") == "userspace"


def test_copies_do_not_touch_the_original() -> None:
    ev = kernel_event("oom_kill", None, "T", 1, None, "b:1")
    assert "usec" not in journal_copy(ev) and "cgroup" not in journal_copy(ev)
    assert with_source(journal_copy(ev), "journal")["source"] == "kmsg"  # has one already
    known: Event = {"time": "T", "kind": "oom_kill", "cgroup": "/a", "dedup": "b:1"}
    both = merged(known, ev)
    assert both["cgroup"] == "/a" and both.get("seq") == 1 and ev["cgroup"] is None


# -- the round trip and the validating reader -------------------------------------------


def _samples() -> list[Event]:
    kill = kernel_event("oom_kill", "/a", utc_iso(1_700_000_000.0), 3, 99, "boot:3")
    return [
        journal_copy(kill),
        notification("oom_resolved", "/a", "eventfd", removed=True),
        counter_event("max", "/a", "memory.events", 1, 4, utc_now_iso()),
        user_kill(
            cgroup="/a",
            pid=4,
            comm="c",
            signal="SIGKILL",
            mechanism="pidfd",
            target="/a",
            by="daemon",
        ),
        journaled(daemon_record("daemon_started", "/", policy="priority", dry_run=False)),
    ]


def test_round_trip_through_a_json_line() -> None:
    for rec in _samples():
        line = json.dumps(rec, separators=(",", ":"), sort_keys=True)
        assert parse_record(json.loads(line)) == rec


def test_round_trip_through_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "state")
    (tmp_path / "state").mkdir(mode=0o700)
    records = _samples()
    assert journal.append(records) == records
    assert list(journal.read()) == records


@pytest.mark.parametrize(
    "obj",
    [
        None,
        [],
        "user_kill",
        {"kind": None, "time": "T"},
        {"kind": "user_kill"},  # no time
        {"kind": "user_kill", "time": 5},
        {"kind": "user_kill", "time": "T", "pid": "7"},
        {"kind": "user_kill", "time": "T", "pid": True},  # a bool is no pid
        {"kind": "user_kill", "time": "T", "cgroup": 3},
        {"kind": "user_kill", "time": "T", "extra": [1.0, float("inf")]},
        {"kind": "user_kill", "time": "T", "extra": {"x": float("nan")}},
    ],
)
def test_parse_rejects_what_readers_cannot_use(obj: object) -> None:
    assert parse_record(obj) is None


def test_parse_keeps_unknown_keys_and_nulls() -> None:
    obj = {"kind": "future_kind", "time": "T", "pid": None, "new_key": [1, 2]}
    assert parse_record(obj) == obj


def test_file_stamp_is_the_same_clock_compact() -> None:
    assert utc_file_stamp(1_700_000_000.9) == "20231114T221320Z"
    assert re.match(r"^\d{8}T\d{6}Z$", utc_file_stamp())
