"""``events --json`` and ``explain-kill --json`` are written item by item
(``render/jsonstream.py``): the same bytes as the document built whole
(``json.dumps(doc, indent=2)``, what ``emit_json`` printed), in constant memory, and an
item is out before the rest of the input has been read."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from memcgctl.cli import cli
from memcgctl.inputs.logfile import read_log_lines
from memcgctl.logic.events import matches
from memcgctl.logic.oomassembler import collect, saved_events
from memcgctl.logic.postmortem import explain_report
from memcgctl.render.eventline import worded
from memcgctl.render.explain import kill_explanation_json
from memcgctl.render.jsonstream import Later, write_json_stream
from memcgctl.vocab.cgpath import CgroupPath
from tests.fakehost import FakeHost
from tests.realdata import REPO_ROOT, data_dir
from tests.test_real_explain import EXPLAINED

# -- the writer ----------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),  # control characters, non-ASCII, quotes: escaped by json
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=25,
)


def streamed(value: Any, draw: st.DrawFn) -> Any:
    """``value`` with some lists made iterators and some values made Later, wherever
    the writer takes them: as a dict's values and an iterator's items (a real list is
    written by json.dumps, which knows neither)."""
    if isinstance(value, dict):
        value = {k: streamed(v, draw) for k, v in value.items()}
    elif isinstance(value, list) and draw(st.booleans()):
        value = iter([streamed(v, draw) for v in value])
    if draw(st.booleans()):
        return Later(lambda: value)
    return value


def text_of(doc: Any, flush: bool = False) -> str:
    out: list[str] = []
    write_json_stream(doc, out.append, (lambda: None) if flush else None)
    return "".join(out)


@settings(deadline=None)  # no timing: the machine is shared
@given(st.dictionaries(st.text(), values, max_size=5), st.data())
def test_the_text_is_json_dumps_of_the_whole_document(doc: dict[str, Any], data: Any) -> None:
    assert text_of(streamed(doc, data.draw)) == json.dumps(doc, indent=2) + "\n"
    lazy = {k: streamed(v, data.draw) for k, v in doc.items()}
    assert text_of(lazy, flush=True) == json.dumps(doc, indent=2) + "\n"


def test_later_is_computed_after_the_items_before_it() -> None:
    seen: list[int] = []

    def items() -> Iterator[int]:
        for n in range(3):
            seen.append(n)
            yield n

    doc = {"items": items(), "count": Later(lambda: len(seen))}
    assert json.loads(text_of(doc)) == {"items": [0, 1, 2], "count": 3}


def test_each_item_is_written_out_before_the_next_is_pulled() -> None:
    written: list[str] = []
    flushed: list[str] = []  # the text out at each flush
    pulled: list[int] = []

    def items() -> Iterator[dict[str, int]]:
        for n in range(3):
            # what was out when item n was asked for: the head and items 0..n-1, whole
            text = flushed[-1] if flushed else ""
            assert text.count('"n"') == n and text.startswith('{\n  "head": 1')
            pulled.append(n)
            yield {"n": n}

    write_json_stream(
        {"head": 1, "items": items()}, written.append, lambda: flushed.append("".join(written))
    )
    assert pulled == [0, 1, 2]
    assert json.loads(flushed[-1]) == {"head": 1, "items": [{"n": 0}, {"n": 1}, {"n": 2}]}


def test_what_json_cannot_write_is_still_refused() -> None:
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        text_of({"a": {1, 2}})


# -- the commands, on real saved logs -------------------------------------------------------


def real_logs() -> list[Path]:
    root = REPO_ROOT.parent / "shared" / "data" / "oom-logs"
    if not root.is_dir():
        return [root]  # the test runs and skips, saying where the data was looked for
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".log", ".txt"))


def run(host: FakeHost, *args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args), env=host.cli_env())
    return r.exit_code, r.stdout


@pytest.mark.parametrize("path", real_logs(), ids=lambda p: p.name)
def test_events_from_a_real_log_is_the_whole_document(fake_v1: FakeHost, path: Path) -> None:
    data_dir("oom-logs")
    log = str(path)
    for root in ("/", "/kubepods"):
        whole = {
            "root": root,
            "from": log,
            "since": None,
            "until": None,
            "events": [
                worded(ev)
                for ev in saved_events(read_log_lines(log), log)
                if matches(ev, CgroupPath(root), None)
            ],
        }
        code, out = run(
            fake_v1, "events", "--from", log, *([root] if root != "/" else []), "--json"
        )
        assert code == 0
        assert out == json.dumps(whole, indent=2) + "\n"


@pytest.mark.parametrize("path", real_logs(), ids=lambda p: p.name)
def test_explain_kill_of_a_real_log_is_the_whole_document(fake_v1: FakeHost, path: Path) -> None:
    data_dir("oom-logs")
    log = str(path)
    report, _ = collect(read_log_lines(log), None, log)
    code, out = run(fake_v1, "explain-kill", "--from", log, "--json")
    if report is None:
        assert code == 1 and out == ""
        return
    assert code == 0
    whole = kill_explanation_json(explain_report(report))
    assert out == json.dumps(whole, indent=2) + "\n"
    rel = str(path.relative_to(data_dir("oom-logs")))
    if EXPLAINED.get(rel, ("",))[0] == "matches":  # not two empty arrays
        assert json.loads(out)["kernel"]["candidates"]


# -- events --json over a journal with odd records ----------------------------------------

ODD_RECORDS: list[dict[str, Any]] = [
    # out of time order: a kernel kill journaled after later records
    {"time": "2026-12-01T10:00:05.000000Z", "kind": "manual_kill", "cgroup": "/a/job",
     "source": "journal", "pid": 7, "comm": "x\x1b[31mred\u2028", "by": "kill-all"},
    {"time": "2026-12-01T09:00:00.000000Z", "kind": "oom_kill", "cgroup": "/a/job",
     "source": "kmsg", "pid": 8, "comm": "Ünïcödé 進程", "dedup": "old-boot:12",
     "constraint": "CONSTRAINT_MEMCG", "oom_memcg": "/a"},
    # the same kernel kill twice (two copies survive a rotation): shown once
    {"time": "2026-12-01T09:00:00.000000Z", "kind": "oom_kill", "cgroup": "/a/job",
     "source": "kmsg", "pid": 8, "comm": "again", "dedup": "old-boot:12"},
    # the same time as another record: the order the sort keeps
    {"time": "2026-12-01T10:00:05.000000Z", "kind": "user_kill", "cgroup": "/b",
     "source": "journal", "pid": 2**62, "signal": "SIGKILL", "extra": {"nested": [1.5, None]}},
    # a copy of a kill still in the kernel ring (kmsg_dump's pid 100): merged into it
    {"time": "2023-11-14T22:13:20.003000Z", "kind": "oom_kill", "cgroup": "/a/job",
     "source": "kmsg", "pid": 100, "comm": "grow", "dedup": "fake-boot-id:3"},
    {"time": "", "kind": "would_kill", "cgroup": None, "source": "journal"},
    {"time": "2026-12-01T08:00:00Z", "kind": "under_oom", "cgroup": "/a\"quoted\\", "source": "eventfd"},
]  # fmt: skip


def test_events_json_over_odd_journal_records_is_the_whole_document(fake_v1: FakeHost) -> None:
    from tests.test_events_unit import make_host

    host = make_host(fake_v1)
    host.state.mkdir(mode=0o700, exist_ok=True)
    # as the writer writes them (journal.idx reads that layout)
    lines = [json.dumps(r, separators=(",", ":"), sort_keys=True) for r in ODD_RECORDS]
    (host.state / "journal.jsonl.1").write_text("\n".join(lines[:3]) + "\n")
    # garbage and a torn last line: skipped (with a warning), the rest kept
    (host.state / "journal.jsonl").write_text(
        "\n".join([*lines[3:], "not json", '{"kind": null}']) + '\n{"time": "2026-'
    )
    for p in host.state.iterdir():
        p.chmod(0o600)
    for root in ("/", "/a"):
        run(host, "events", root, "--json-lines")  # the ring's kills journaled, the file repaired
        code, out = run(host, "events", root, "--json-lines")
        assert code == 0
        events = [json.loads(x) for x in out.splitlines()]
        assert len(events) == (8 if root == "/" else 4)  # each kill once
        whole = {"root": root, "since": None, "events": events}
        code, out = run(host, "events", root, "--json")
        assert code == 0
        assert out == json.dumps(whole, indent=2) + "\n"


# -- an item is out before the input ends -------------------------------------------------


def read_until(fd: int, text: bytes, got: bytearray) -> None:
    """Read ``fd`` into ``got`` until it holds ``text``; fails (not hangs) if the writer
    stops or says nothing for a minute (a guard, not a timing assertion)."""
    while text not in got:
        ready, _, _ = select.select([fd], [], [], 60)
        assert ready, f"nothing more after {bytes(got)!r}"
        chunk = os.read(fd, 1 << 16)
        assert chunk, f"output ended after {bytes(got)!r}"
        got += chunk


def test_events_from_a_pipe_prints_each_kill_before_the_log_ends(fake_v1: FakeHost) -> None:
    from bench.stream_bench import report

    env = {**os.environ, **fake_v1.cli_env(), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "memcgctl", "events", "--from", "-", "--json"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    got = bytearray()
    try:
        proc.stdin.write(report(1).encode())
        proc.stdin.flush()
        # the first kill's item, whole, while the log is still open: the command is
        # blocked reading standard input, not holding the document back
        read_until(proc.stdout.fileno(), b'"pid": 10001', got)
        read_until(proc.stdout.fileno(), b"\n    }", got)
        assert proc.poll() is None
        assert b"10002" not in got
        proc.stdin.write(report(2).encode())
        proc.stdin.close()
        got += proc.stdout.read()
        assert proc.wait() == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    doc = json.loads(got)
    assert [e["pid"] for e in doc["events"] if e["kind"] == "oom_kill"] == [10001, 10002]


def test_a_log_that_cannot_be_read_prints_no_half_document(
    fake_v1: FakeHost, tmp_path: Path
) -> None:
    r = CliRunner().invoke(
        cli, ["events", "--from", str(tmp_path / "missing.log"), "--json"], env=fake_v1.cli_env()
    )
    assert r.exit_code == 2 and r.stdout == ""  # as before: a usage error naming the file
    assert r.stderr.count("\n") == 1 and "missing.log: no such file" in r.stderr


# -- the history in bounded memory is the history ------------------------------------------

TIMES = st.sampled_from(
    [
        "",
        "2023-01-01T00:00:00Z",
        "2026-12-01T10:00:00.000000Z",
        "2026-12-01T10:00:00.500000Z",
        "2026-12-01T10:00:01.000000Z",
        "2026-12-01T10:00:03.000000Z",
    ]
)
CGROUPS = st.sampled_from(["/a", "/a/job", "/b", None])
KEYS = st.sampled_from([None, "boot:1", "boot:2", "boot:3", "old:9", "old:10"])


@st.composite
def journal_record(draw: st.DrawFn) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "time": draw(TIMES),
        "kind": draw(st.sampled_from(["oom_kill", "user_kill", "manual_kill", "under_oom"])),
        "cgroup": draw(CGROUPS),
        "pid": draw(st.integers(1, 5)),
    }
    key = draw(KEYS)
    if key is not None:
        rec["dedup"] = key
    if draw(st.booleans()):
        rec["source"] = draw(st.sampled_from(["kmsg", "journal", "eventfd"]))
    return rec


@st.composite
def kernel_kill(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "time": draw(TIMES),
        "kind": "oom_kill",
        "cgroup": draw(CGROUPS),
        "source": "kmsg",
        "dedup": draw(KEYS.filter(lambda k: k is not None and k.startswith("boot"))),
        "cause": draw(st.sampled_from(["memcg", "system"])),
        "oom_memcg": draw(st.sampled_from(["/a", "/b", "/"])),
        "comm": draw(st.sampled_from(["grow", None])),
    }


@settings(deadline=None, max_examples=300)
@given(
    st.lists(kernel_kill(), max_size=5),
    st.lists(journal_record(), max_size=14),
    st.dictionaries(KEYS.filter(lambda k: k is not None), TIMES, max_size=3),
    st.sampled_from(["/", "/a", "/b"]),
    st.sampled_from([None, "2026-12-01T10:00:00.500000Z"]),
    st.integers(1, 4),
)
def test_history_in_bounded_memory_is_the_history(
    kernel: list[Any],
    journal: list[Any],
    invoked: dict[str, str],
    root: str,
    since: str | None,
    run: int,
) -> None:
    """Any journal order, ties, repeated and merged dedup keys, spilled runs of 1-4
    records: the same events in the same order as the in-memory merge."""
    from memcgctl.logic.events import merge_history, oom_starts
    from memcgctl.watch.history import history_in_order

    cg = CgroupPath(root)
    starts = oom_starts(kernel, invoked, journal)
    whole = [ev for ev in merge_history([*starts, *kernel], journal) if matches(ev, cg, since)]
    assert list(history_in_order(kernel, invoked, iter(journal), cg, since, run)) == whole


def test_the_journal_read_record_by_record_is_the_journal(tmp_path: Path) -> None:
    """iter_file (in chunks as small as 7 bytes) finds what scan_lines finds, and
    Journal.iter_read what Journal.read returns, warnings and repairs included."""
    from memcgctl.state.journal import Journal
    from memcgctl.state.journallines import MAX_LINE_BYTES, iter_file, scan_lines

    good = [json.dumps(r, separators=(",", ":"), sort_keys=True) for r in ODD_RECORDS]
    lines = [
        good[0],
        "",
        "not json",
        '{"kind": null, "time": "x"}',
        good[1],
        '{"kind":"x","time":"' + "y" * MAX_LINE_BYTES + '"}',  # too long
        "   ",
        *good[2:],
        "[1, 2",
    ]
    text = "\n".join(lines) + '\n{"time":"2026-12-01T11:00:00Z","kind":"torn'
    states = []
    for name in ("a", "b"):
        state = tmp_path / name
        state.mkdir(mode=0o700)
        (state / "journal.jsonl.1").write_text(text)
        (state / "journal.jsonl").write_text("\n".join(good[:2]) + "\n")
        for p in state.iterdir():
            p.chmod(0o600)
        states.append(state)
    data = (states[0] / "journal.jsonl.1").read_bytes()
    found, _, bad = scan_lines(data, torn_ok=True)
    for chunk in (7, 64, 1 << 20):
        each = list(iter_file(states[0] / "journal.jsonl.1", chunk))
        assert [r for r in each if r is not None] == found
        assert sum(r is None for r in each) == bad == 4
    warned: list[list[str]] = [[], []]
    whole = list(Journal(states[0], warn=warned[0].append).read())
    streamed = list(Journal(states[1], warn=warned[1].append).iter_read())
    assert streamed == whole and len(whole) == len(good) + 2

    def said(w: str) -> str:  # the same words, but for the directory and the time
        return w.replace("/b/", "/a/").rsplit(".corrupt-", 1)[0]

    assert [said(w) for w in warned[1]] == [said(w) for w in warned[0]] and warned[0]
    assert (states[1] / "journal.jsonl.1").read_bytes() == (
        states[0] / "journal.jsonl.1"
    ).read_bytes()  # repaired alike


@settings(deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers()), max_size=30), st.integers(1, 5))
def test_sorted_bounded_is_a_stable_sort(items: list[tuple[str, int]], run: int) -> None:
    from memcgctl.state.spill import sorted_bounded

    def key(x: Any) -> str:
        return str(x[0])

    want = sorted(items, key=key)
    assert [tuple(x) for x in sorted_bounded(items, key, run)] == want
    # no room for temporary files: the runs stay in memory, the result is the same
    nowhere = "/nonexistent/memcgctl-spill"
    assert [tuple(x) for x in sorted_bounded(items, key, run, nowhere)] == want
