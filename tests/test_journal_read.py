"""``events CG`` reads only the journal lines that name CG (or a kernel kill in hand):
the same records as the whole read filtered, at a cost that does not grow with the
journal's other records (bench/events_bench.py --history measures it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.logic.events import matches, merge_history
from memcgctl.state import journalread
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.records import Event
from tests.fakehost import FakeHost


def _rec(n: int, cgroup: str, **extra: object) -> bytes:
    rec: dict[str, object] = {
        "time": f"2026-11-30T10:{n // 60 % 60:02d}:{n % 60:02d}.000000Z",
        "kind": "manual_kill",
        "cgroup": cgroup,
        "source": "journal",
        "pid": 1000 + n,
        "comm": "job",
        "signal": "SIGKILL",
        "mechanism": "cgroup.kill",
        "target": cgroup,
        "by": "kill-all",
        **extra,
    }
    return json.dumps(rec, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def _journal(tmp_path: Path, old: bytes, new: bytes) -> Journal:
    state = tmp_path / "state"
    state.mkdir(mode=0o700, parents=True)
    (state / "journal.jsonl.1").write_bytes(old)
    (state / "journal.jsonl").write_bytes(new)
    for p in state.iterdir():
        p.chmod(0o600)
    return Journal(state)


def _wanted(journal: Journal, root: str) -> list[Event]:
    cg = CgroupPath.parse(root)
    assert cg is not None
    return [r for r in journal.read() if matches(r, cg, None)]


@pytest.mark.parametrize("chunk", [64, 333, 1 << 20])
def test_the_same_records_as_the_whole_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(journalread, "CHUNK", chunk)  # lines split across chunks
    old = b"".join(_rec(n, f"/batch/job{n % 7}") for n in range(200))
    new = (
        b"".join(_rec(n, f"/batch/job{n % 7}") for n in range(200, 260))
        + _rec(1, "/ab")  # a path that only starts like /a
        + _rec(2, "/a/x")
        + _rec(3, "/other", kind="oom_kill", dedup="boot:42")
        + b'{"kind":"manual_kill","cgroup":"/a/torn'  # a writer mid-line
    )
    journal = _journal(tmp_path, old, new)
    for root in ("/a", "/batch/job3", "/quiet", "/other"):
        found = journalread.read_matching(journal, root)
        assert found is not None
        cg = CgroupPath.parse(root)
        assert cg is not None
        # a superset of what the caller wants, in journal order; filtered, the same
        want = _wanted(journal, root)
        assert [r for r in found if matches(r, cg, None)] == want
        # what events shows: the merged history filtered, the same as from the whole read
        shown = [e for e in merge_history([], found) if matches(e, cg, None)]
        assert shown == [e for e in merge_history([], journal.read()) if matches(e, cg, None)]


def test_what_it_cannot_search_for_reads_the_whole_journal(tmp_path: Path) -> None:
    journal = _journal(tmp_path, b"", _rec(1, "/é"))
    assert journalread.read_matching(journal, "/é") is None  # JSON escapes it
    assert journalread.read_matching(journal, '/a"b') is None
    # a line of the subtree that is no record: the whole read warns and repairs it
    journal = _journal(tmp_path / "x", b"", _rec(1, "/a") + b'{"cgroup":"/a","kind":null}\n')
    assert journalread.read_matching(journal, "/a") is None
    # a bad line elsewhere is not read at all
    journal = _journal(tmp_path / "y", b"", _rec(1, "/a") + b"garbage /b\n")
    found = journalread.read_matching(journal, "/a")
    assert found is not None and [r["cgroup"] for r in found] == ["/a"]


def test_a_symlinked_journal_is_left_to_the_whole_read(tmp_path: Path) -> None:
    journal = _journal(tmp_path, b"", b"")
    journal.path.unlink()
    journal.path.symlink_to(tmp_path / "elsewhere")
    assert journalread.read_matching(journal, "/a") is None


def test_events_cg_shows_the_same_history(fake_v1: FakeHost) -> None:
    """The command: kills of /a from the journal (rotated file too) and none of /b's."""
    host = fake_v1
    host.cgroup("/a")
    host.cgroup("/b")
    (host.base / "kmsg").write_text("6,1,1000,-;Linux version 6.x\n")
    old = b"".join(_rec(n, "/b/job") for n in range(500)) + _rec(7, "/a/job")
    host.state.mkdir(mode=0o700, exist_ok=True)
    (host.state / "journal.jsonl.1").write_bytes(old)
    (host.state / "journal.jsonl").write_bytes(_rec(8, "/a") + _rec(9, "/b"))
    for p in host.state.iterdir():
        p.chmod(0o600)
    r = CliRunner().invoke(cli, ["events", "/a", "--json"], env=host.cli_env())
    assert r.exit_code == 0, r.output
    assert [(e["pid"], e["cgroup"]) for e in json.loads(r.output)["events"]] == [
        (1007, "/a/job"),
        (1008, "/a"),
    ]
    r = CliRunner().invoke(cli, ["events", "/quiet", "--json"], env=host.cli_env())
    assert r.exit_code != 0 or json.loads(r.output)["events"] == []


def _pids(found: list[Event] | None, root: str) -> list[object]:
    cg = CgroupPath.parse(root)
    assert found is not None and cg is not None
    return [r.get("pid") for r in found if matches(r, cg, None)]


def test_the_index_skips_files_that_name_no_cgroup_of_the_subtree(tmp_path: Path) -> None:
    journal = _journal(tmp_path, b"".join(_rec(n, "/b") for n in range(50)), _rec(50, "/b"))
    assert journalread.read_matching(journal, "/a") == []
    index = json.loads((journal.state_dir / journalread.INDEX).read_bytes())
    assert index["rotated"]["cgroups"] == ["/b"] and index["current"]["cgroups"] == ["/b"]
    # appended since: read once from where the index stopped, and found
    journal.append([json.loads(_rec(51, "/a/x"))])
    assert _pids(journalread.read_matching(journal, "/a"), "/a") == [1051]
    index = json.loads((journal.state_dir / journalread.INDEX).read_bytes())
    assert index["current"]["cgroups"] == ["/a/x", "/b"]
    assert _pids(journalread.read_matching(journal, "/a"), "/a") == [1051]


def test_a_file_rewritten_in_place_is_indexed_anew(tmp_path: Path) -> None:
    journal = _journal(tmp_path, b"", _rec(1, "/b") + _rec(2, "/b"))
    assert journalread.read_matching(journal, "/a") == []
    with open(journal.path, "r+b") as f:  # same inode, other records (a pruning rewrite)
        f.write(_rec(3, "/a") + _rec(4, "/b"))
    assert _pids(journalread.read_matching(journal, "/a"), "/a") == [1003]


def test_a_corrupt_or_forged_index_is_rebuilt(tmp_path: Path) -> None:
    journal = _journal(tmp_path, b"", _rec(1, "/a") + _rec(2, "/b"))
    for junk in (b"garbage", b"[]", b'{"current": {"ino": 1, "upto": 0}}', b'{"current": 7}'):
        (journal.state_dir / journalread.INDEX).write_bytes(junk)
        assert _pids(journalread.read_matching(journal, "/a"), "/a") == [1001]
    # an entry that claims the file names nothing, with the wrong fingerprint
    st = journal.path.stat()
    forged = {"current": {"ino": st.st_ino, "upto": st.st_size, "tail": "00", "cgroups": []}}
    (journal.state_dir / journalread.INDEX).write_text(json.dumps(forged))
    assert _pids(journalread.read_matching(journal, "/a"), "/a") == [1001]


def test_a_rotation_keeps_the_index_of_the_file_it_renamed(tmp_path: Path) -> None:
    journal = _journal(tmp_path, b"", _rec(1, "/b"))
    assert journalread.read_matching(journal, "/a") == []
    before = json.loads((journal.state_dir / journalread.INDEX).read_bytes())["current"]
    journal.path.rename(journal.rotated)  # what the writer's rotation does
    journal.path.write_bytes(_rec(2, "/a"))
    journal.path.chmod(0o600)
    assert _pids(journalread.read_matching(journal, "/a"), "/a") == [1002]
    after = json.loads((journal.state_dir / journalread.INDEX).read_bytes())
    assert after["rotated"] == before
