"""events / counters on fixture trees, the kmsg reader's EPIPE handling, merging."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from memcgctl.cli import cli
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.hierarchy import hierarchy_at
from memcgctl.kernel.kmsgdev import KmsgReader, split_records
from memcgctl.logic.counters import (
    by_cause,
    entry,
    label_text,
    prometheus,
    subtree_sum,
)
from memcgctl.logic.events import diff_counters, merge_history
from memcgctl.render.eventline import format_event
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.records import Event
from memcgctl.watch.follower import Follower
from tests.fakehost import FakeHost
from tests.promtext import parse_exposition

BTIME = 1_700_000_000

KILL_A = (
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/a,task_memcg=/a/job,task=grow,pid={pid},uid=0\n"
    "3,{seq},{usec},-;Memory cgroup out of memory: Killed process {pid} (grow) total-vm:1kB, "
    "anon-rss:32000kB, file-rss:10kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0"
)


def kmsg_dump(host: FakeHost, *extra: str) -> None:
    lines = [
        "6,1,1000,-;Linux version 6.x",
        " SUBSYSTEM=cpu",
        "6,2,2000,-;" + KILL_A.format(pid=100, seq=3, usec=3000),
        "4,4,4000,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,"
        "global_oom,task_memcg=/b,task=big app,pid=200,uid=1000",
        "3,5,5000,-;Out of memory: Killed process 200 (big app) total-vm:1kB, anon-rss:1kB, "
        "file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:4kB oom_score_adj:0",
        *extra,
    ]
    (host.base / "kmsg").write_text("\n".join(lines) + "\n")
    (host.proc / "stat").write_text(f"cpu 1 2 3\nbtime {BTIME}\n")


def make_host(host: FakeHost) -> FakeHost:
    host.cgroup("/a", oom_kill=0)
    host.cgroup("/a/job", oom_kill=1)
    host.cgroup("/b", oom_kill=1)
    (host.proc / "vmstat").write_text("nr_free_pages 1\noom_kill 2\n")
    kmsg_dump(host)
    return host


def run(host: FakeHost, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args), env=host.cli_env())
    return r.exit_code, r.output


# -- the kmsg reader ---------------------------------------------------------------------


class ScriptedKmsg(KmsgReader):
    """A kmsg device whose reads follow a script (records, EPIPE, EAGAIN)."""

    def __init__(self, script: list[bytes | BaseException], fd: int = -1) -> None:
        super().__init__("/fake/kmsg")
        self.script = script
        self.fd = fd
        self.is_device = True

    def _read_one(self) -> bytes:
        if not self.script:
            raise BlockingIOError
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item


def test_epipe_when_ring_overwrote_records_continues() -> None:
    rec1 = b"6,1,1,-;one\n"
    rec2 = b"6,9,9,-;after the gap\n"
    reader = ScriptedKmsg([rec1, BrokenPipeError(), rec2, BlockingIOError(), b"6,10,10,-;x\n"])
    assert reader.read_available() == [rec1, rec2]
    assert reader.lost == 1
    assert reader.read_available() == [b"6,10,10,-;x\n"]  # the follow-up read still works


def test_follower_stream_continues_after_epipe(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/a")
    fake_v1.cgroup("/a/job")
    fs = CgroupFs(hierarchy_at(fake_v1.cgroot))
    r, w = os.pipe()
    try:
        os.write(w, b"x")  # make the fd readable so poll() wakes the follower
        lines = KILL_A.format(pid=7, seq=21, usec=21000).split("\n")
        reader = ScriptedKmsg(
            [
                BrokenPipeError(),
                f"6,20,20000,-;{lines[0]}".encode(),
                BrokenPipeError(),
                lines[1].encode(),
            ],
            fd=r,
        )
        seen: list[Event] = []
        journaled: list[Event] = []
        follower = Follower(
            fs,
            CgroupPath("/a"),
            reader,
            BTIME,
            "boot",
            emit=seen.append,
            on_kernel_kill=journaled.append,
        )
        follower.step(now=0.0)
        assert reader.lost == 2
        assert [(e["kind"], e.get("pid"), e["cgroup"]) for e in seen] == [("oom_kill", 7, "/a/job")]
        assert journaled and journaled[0].get("dedup") == "boot:21"
        follower.close()
    finally:
        os.close(r)
        os.close(w)


def kmsg_seq(record: bytes) -> int:
    return int(record.split(b";", 1)[0].split(b",")[1])


@pytest.mark.skipif(not os.access("/dev/kmsg", os.R_OK), reason="needs /dev/kmsg (root)")
def test_skipping_the_history_reads_only_what_comes_after() -> None:
    """The daemon skips the ring's history with lseek(SEEK_END) instead of reading it
    (issue 22: thousands of reads and bytes objects at start): what it reads next is
    newer than everything a full read saw."""
    everything = KmsgReader("/dev/kmsg").open()
    skipping = KmsgReader("/dev/kmsg").open()
    try:
        history = everything.read_available()
        assert history  # the boot messages at least
        skipping.skip_history()
        later = skipping.read_available()
    finally:
        everything.close()
        skipping.close()
    last = max(kmsg_seq(r) for r in history)
    assert all(kmsg_seq(r) > last for r in later), later


def test_skipping_the_history_of_a_dump_file(tmp_path: Path) -> None:
    dump = tmp_path / "kmsg"
    dump.write_bytes(b"6,1,1,-;one\n6,2,2,-;two\n")
    reader = KmsgReader(str(dump)).open()
    reader.skip_history()
    assert reader.read_available() == []


def test_split_records_of_a_dump_file() -> None:
    assert split_records(b"6,1,1,-;a\n SUB=x\n6,2,2,-;b\n") == [b"6,1,1,-;a\n SUB=x", b"6,2,2,-;b"]


# -- pure helpers ------------------------------------------------------------------------


def test_merge_history_dedups_and_journal_fills_gaps() -> None:
    kernel: list[Event] = [
        {"time": "2024-01-01T00:00:02Z", "kind": "oom_kill", "dedup": "b:2", "cgroup": None}
    ]
    journal: list[Event] = [
        {"time": "2024-01-01T00:00:02Z", "kind": "oom_kill", "dedup": "b:2", "cgroup": "/a"},
        {"time": "2024-01-01T00:00:01Z", "kind": "oom_kill", "dedup": "b:1", "cgroup": "/old"},
        {"time": "2024-01-01T00:00:03Z", "kind": "user_kill", "cgroup": "/a", "pid": 5},
    ]
    merged = merge_history(kernel, journal)
    assert [e.get("dedup") for e in merged] == ["b:1", "b:2", None]
    assert merged[1]["cgroup"] == "/a"  # filled in from the journal copy
    assert merged[0]["source"] == "journal"


def test_diff_counters_reports_increments_only() -> None:
    old = {"low": 0, "high": 1, "max": 5, "oom": 1, "oom_kill": 1, "oom_group_kill": 0}
    new = {"low": 3, "high": 1, "max": 7, "oom": 2, "oom_kill": 0, "oom_group_kill": 0}
    events = diff_counters(CgroupPath("/a"), old, new, "memory.events.local", "T")
    assert [(e["kind"], e.get("count")) for e in events] == [("max", 2), ("oom", 1)]
    assert {(e["source"], e.get("file")) for e in events} == {
        ("memory.events", "memory.events.local")
    }


def test_by_cause_and_completeness() -> None:
    kills: list[dict[str, Any]] = [
        {"kind": "oom_kill", "cgroup": "/a/job", "constraint": "CONSTRAINT_MEMCG"},
        {"kind": "oom_kill", "cgroup": "/a", "constraint": "CONSTRAINT_NONE", "oom_memcg": "/"},
        {"kind": "oom_kill", "cgroup": "/ab", "constraint": "CONSTRAINT_MEMCG"},
        {"kind": "user_kill", "cgroup": "/a/job", "pid": 3},
    ]
    assert by_cause(CgroupPath("/a"), kills) == {"system": 1, "memcg": 1, "user": 1}
    local = {"/a": {"oom_kill": 1}, "/a/job": {"oom_kill": 2}, "/ab": {"oom_kill": 9}}
    assert subtree_sum(CgroupPath("/a"), local) == {"oom_kill": 3}
    a = CgroupPath("/a")
    doc = entry(a, local[a], subtree_sum(a, local), by_cause(a, kills))
    assert doc["complete"] is False  # the kernel counted 3, the log shows 2


NO_KILLS = {"system": 0, "memcg": 0, "user": 0}


def test_prometheus_escapes_labels() -> None:
    doc = {
        "system": {"oom_kill": 4},
        "cgroups": [
            entry(CgroupPath('/we"ird\\name\n'), {"oom_kill": 1}, {"oom_kill": 2}, NO_KILLS),
        ],
    }
    text = prometheus(doc)
    assert "# TYPE memcgctl_oom_kills_total counter" in text
    assert 'memcgctl_kernel_oom_kills_total{cgroup="/we\\"ird\\\\name\\n",scope="local"} 1' in text
    assert 'scope="hierarchical"} 2' in text
    families = parse_exposition(text)
    assert families["memcgctl_kernel_oom_kills"][('/we"ird\\name\n', "local")] == 1
    assert "memcgctl_host_oom_kills_total 4" in text
    assert text.endswith("\n")


# issue 21 item 8: names that are not UTF-8 (os.fsdecode gives surrogates) ----------------

# the characters that matter: escapes' own letters, raw bytes, a backslash, non-ASCII text
_NAME_CHARS = st.sampled_from(["\\", "x", "5", "c", "f", "F", "8", "2", "d", "/", "é", "\n", '"'])
_NAMES = st.lists(
    st.one_of(_NAME_CHARS, st.integers(0x80, 0xFF).map(lambda b: chr(0xDC00 + b))), max_size=12
).map("".join)


@given(_NAMES, _NAMES)
def test_label_text_is_utf8_and_one_to_one(a: str, b: str) -> None:
    label_text(a).encode("utf-8")  # no surrogate left: strict UTF-8 encodes it
    assert (label_text(a) == label_text(b)) == (a == b)


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_label_text_keeps_utf8_names_without_byte_escapes(name: str) -> None:
    if "\\x" not in name:
        assert label_text(name) == name


def test_label_text_examples() -> None:
    assert label_text("/d/x\udcffy") == "/d/x\\xffy"
    assert label_text("/d/x\\xffy") == "/d/x\\x5cxffy"  # a literal backslash that looks like one
    assert label_text("/system.slice/a\\x2db.service") == "/system.slice/a\\x2db.service"
    assert label_text("/café") == "/café"


def test_prometheus_is_valid_utf8_for_names_that_are_not() -> None:
    raw, literal = CgroupPath("/d/x\udcffy"), CgroupPath("/d/x\\xffy")
    doc = {
        "system": {"oom_kill": 0},
        "cgroups": [entry(c, {"oom_kill": 1}, {"oom_kill": 1}, NO_KILLS) for c in (raw, literal)],
    }
    text = prometheus(doc).encode("utf-8").decode("utf-8")  # strict both ways
    fams = parse_exposition(text)  # and prometheus_client, when installed
    assert set(fams["memcgctl_kernel_oom_kills"]) == {
        ("/d/x\\xffy", "local"),
        ("/d/x\\xffy", "hierarchical"),
        ("/d/x\\x5cxffy", "local"),
        ("/d/x\\x5cxffy", "hierarchical"),
    }


def test_format_event_is_one_line() -> None:
    line = format_event(
        {"time": "T", "kind": "oom_kill", "cgroup": "/a", "source": "kmsg", "pid": 1, "comm": "x"}
    )
    assert "\n" not in line and "pid 1 (x)" in line and "[kmsg]" in line


# -- the commands on a fixture host -------------------------------------------------------


def test_events_history_json_and_cg_filter(fake_v1: FakeHost) -> None:
    host = make_host(fake_v1)
    code, out = run(host, "events", "--json")
    assert code == 0, out
    doc = json.loads(out)  # --json is one document
    assert doc["root"] == "/" and doc["since"] is None
    # the memcg OOM starts with its under_oom (issue 24), stamped by the kernel's report
    starts = [e for e in doc["events"] if e["kind"] == "under_oom"]
    assert [(e["cgroup"], e["source"]) for e in starts] == [(starts[0]["cgroup"], "kmsg")]
    assert doc["events"][0] == starts[0]
    events = [e for e in doc["events"] if e["kind"] != "under_oom"]
    assert [(e["pid"], e["cgroup"], e["constraint"]) for e in events] == [
        (100, "/a/job", "CONSTRAINT_MEMCG"),
        (200, "/b", "CONSTRAINT_NONE"),
    ]
    assert events[0]["oom_memcg"] == starts[0]["cgroup"]
    assert starts[0]["time"] <= events[0]["time"] == "2023-11-14T22:13:20.003000Z"
    code, out = run(host, "events", "/a", "--json")
    assert [e.get("pid") for e in json.loads(out)["events"]] == [None, 100]
    code, out = run(host, "events", "/a", "--json-lines")
    assert [json.loads(line).get("pid") for line in out.splitlines()] == [None, 100]
    code, out = run(host, "events", "/a")
    assert code == 0 and "pid 100 (grow)" in out and "CONSTRAINT_MEMCG" in out
    # --since: these records are from 2023
    code, out = run(host, "events", "--since", "1h", "--json")
    assert code == 0 and json.loads(out)["events"] == []
    code, out = run(host, "events", "--since", "1h", "--json-lines")
    assert code == 0 and out == ""


def test_kernel_kills_are_journaled_once(fake_v1: FakeHost) -> None:
    host = make_host(fake_v1)
    run(host, "events")
    run(host, "counters", "--json")
    records = list(Journal(host.state).read())
    assert sorted(str(r.get("dedup")) for r in records) == ["fake-boot-id:3", "fake-boot-id:5"]
    # after the ring rotated, the journal still has them
    (host.base / "kmsg").write_text("6,50,50000,-;nothing about OOM\n")
    _code, out = run(host, "events", "--json")
    assert [e["pid"] for e in json.loads(out)["events"]] == [100, 200]


def test_counters_json_v1(fake_v1: FakeHost) -> None:
    host = make_host(fake_v1)
    Journal(host.state).append(
        [
            {
                "time": "2023-11-14T22:13:21.000000Z",
                "kind": "user_kill",
                "cgroup": "/a/job",
                "source": "journal",
                "pid": 300,
                "comm": "x",
                "mechanism": "cgroup.kill",
                "by": "kill-all",
            }
        ]
    )
    code, out = run(host, "counters", "--json")
    assert code == 0, out
    doc = json.loads(out)
    assert doc["system"] == {"oom_kill": 2}
    by = {c["cgroup"]: c for c in doc["cgroups"]}
    assert by["/a/job"]["local"] == {"oom_kill": 1}
    assert by["/a"]["local"] == {"oom_kill": 0} and by["/a"]["hierarchical"] == {"oom_kill": 1}
    assert by["/a"]["by_cause"] == {"system": 0, "memcg": 1, "user": 1}
    assert by["/b"]["by_cause"] == {"system": 1, "memcg": 0, "user": 0}
    assert by["/"]["hierarchical"] == {"oom_kill": 2} and by["/"]["complete"] is True
    code, out = run(host, "counters", "/a", "--format", "prometheus")
    assert 'memcgctl_kernel_oom_kills_total{cgroup="/a",scope="hierarchical"} 1' in out
    assert 'memcgctl_oom_kills_total{cgroup="/a",cause="user"} 1' in out
    parse_exposition(out)
    assert "/b" not in out
    code, out = run(host, "counters", "/a", "--plain")
    assert code == 0 and "MEMCG" in out


def test_counters_incomplete_when_log_lost_kills(fake_v1: FakeHost) -> None:
    host = make_host(fake_v1)
    host.cgroup("/b", oom_kill=5)
    _code, out = run(host, "counters", "/b", "--json")
    assert json.loads(out)["cgroups"][0]["complete"] is False


def test_counters_v2_kernel_counters(fake_v2: FakeHost) -> None:
    fake_v2.cgroup("/a", events={"oom": 2, "oom_kill": 3}, events_local={"oom": 1, "oom_kill": 1})
    kmsg_dump(fake_v2)
    code, out = run(fake_v2, "counters", "/a", "--json")
    assert code == 0, out
    c = json.loads(out)["cgroups"][0]
    assert c["local"] == {"oom": 1, "oom_kill": 1, "oom_group_kill": 0}
    assert c["hierarchical"] == {"oom": 2, "oom_kill": 3, "oom_group_kill": 0}
    assert c["by_cause"]["memcg"] == 1 and c["complete"] is False


def test_events_missing_kmsg_uses_journal(fake_v1: FakeHost, tmp_path: Path) -> None:
    make_host(fake_v1)
    (fake_v1.base / "kmsg").unlink()
    r = CliRunner().invoke(cli, ["events", "--json"], env=fake_v1.cli_env())
    assert r.exit_code == 0
    assert "kernel log unavailable" in r.output


def test_counters_parse_only_what_came_after_the_cursor(fake_v1: FakeHost) -> None:
    """Kills up to the cursor are in the journal; later runs parse only newer records,
    and count the same."""
    host = make_host(fake_v1)
    journal = Journal(host.state)
    _code, out = run(host, "counters", "/a", "/b", "--json")
    first = json.loads(out)
    assert journal.read_cursor("fake-boot-id") == 5  # the last kill line
    assert journal.read_cursor("another-boot") is None
    # the ring loses the old records: the journal still has those kills
    (host.base / "kmsg").write_text("6,6,6000,-;nothing about OOM\n")
    _code, out = run(host, "counters", "/a", "/b", "--json")
    assert json.loads(out) == first
    # a new kill after the cursor is parsed and counted
    kmsg_dump(host, "6,7,7000,-;" + KILL_A.format(pid=101, seq=8, usec=8000))
    host.cgroup("/a/job", oom_kill=2)
    _code, out = run(host, "counters", "/a", "--json")
    assert json.loads(out)["cgroups"][0]["by_cause"]["memcg"] == 2
    assert journal.read_cursor("fake-boot-id") == 8
    kills = [r for r in journal.read() if r.get("kind") == "oom_kill"]
    assert sorted(int(str(r.get("pid"))) for r in kills) == [100, 101, 200]  # each journaled once


def test_cursor_never_moves_backwards(tmp_path: Path) -> None:
    j = Journal(tmp_path)
    j.write_cursor("b", 10)
    j.write_cursor("b", 7)
    assert j.read_cursor("b") == 10
    (tmp_path / "kmsg.cursor").write_text("{garbage")
    assert j.read_cursor("b") is None
