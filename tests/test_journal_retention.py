"""Issue 21 #4: the journal's oldest file is shared fairly per owner, so one owner's
flood of records cannot evict another's history (unit level; the real flood, as
nobody with real OOMs, is in test_daemon_hardening_kernel.py)."""

from __future__ import annotations

import os
from collections.abc import Hashable
from pathlib import Path

from memcgctl.state.journal import Journal
from memcgctl.state.retention import cgroup_owner, fair_share
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.records import Event, user_kill


def kill(cg: str, pid: int) -> Event:
    return user_kill(
        cgroup=cg, pid=pid, comm="x", signal="SIGKILL", mechanism="pidfd", target=cg, by="daemon"
    )


def owner(cg: str) -> Hashable:
    return "nobody" if cg.startswith("/deleg") else "root"


def test_a_flood_from_one_owner_keeps_the_others_records(tmp_path: Path) -> None:
    j = Journal(tmp_path / "state", max_bytes=4096, owner_of=owner)
    j.append([kill("/jobs/low", 1)])
    long = "/deleg/" + "x" * 200
    for i in range(150):  # ~40 KB: about 10 rotations of a 4 KiB journal
        j.append([kill(f"{long}/{i}", 1000 + i)])
    pids = [r.get("pid") for r in j.read()]
    assert 1 in pids
    assert 1000 not in pids and 1149 in pids  # the flood evicted only its own oldest
    assert j.older.stat().st_size <= 4096 + 4096  # bounded: .2 at most the cap (+ a line)


def test_without_owners_the_flood_is_per_cgroup_and_bounded(tmp_path: Path) -> None:
    j = Journal(tmp_path / "state", max_bytes=4096)
    j.append([kill("/jobs/low", 1)])
    for i in range(150):
        j.append([kill("/deleg/a", 1000 + i)])  # one cgroup floods
    assert 1 in [r.get("pid") for r in j.read()]
    sizes = [p.stat().st_size for p in (j.older, j.rotated, j.path)]
    assert max(sizes) <= 4096 + 512


def test_fair_share_gives_unused_room_to_the_others() -> None:
    recs = [kill("/a", 1)] + [kill("/deleg/b", i) for i in range(10, 60)]
    lines = [str(r).encode() for r in recs]
    budget = 20 * len(lines[1])
    kept = fair_share(recs, lines, budget, owner)
    assert kept[0] == lines[0]  # root's one record, though nobody has 50
    theirs = kept[1:]
    assert theirs == lines[len(lines) - len(theirs) :]  # nobody's newest, in order
    assert sum(len(line) + 1 for line in kept) <= budget
    # nobody got the whole rest: one more of its records would not fit
    assert sum(len(line) + 1 for line in kept) + len(lines[1]) + 1 > budget


def test_cgroup_owner_takes_the_nearest_existing_ancestor(tmp_path: Path) -> None:
    mount = tmp_path / "cg"
    (mount / "deleg").mkdir(parents=True)
    os.chown(mount / "deleg", 65534, 65534)

    def path_of(cg: CgroupPath) -> str:
        return str(mount) if cg == "/" else str(mount) + cg

    own = cgroup_owner(path_of)
    assert own("/deleg/gone/deeper") == 65534  # removed since: its delegation's owner
    assert own("/other") == os.getuid()  # gone, outside: the root's owner
    assert own("/../etc") == "name:/../etc" and own("-") == "name:-"


def test_the_subtree_read_of_events_sees_the_older_file(tmp_path: Path) -> None:
    """``events CG`` reads only the files whose index names the subtree: the kept
    history in journal.jsonl.2 is among them."""
    from memcgctl.state.journalread import read_matching

    j = Journal(tmp_path / "state", max_bytes=4096, owner_of=owner)
    j.append([kill("/jobs/low", 1)])
    for i in range(150):
        j.append([kill(f"/deleg/{'x' * 200}/{i}", 1000 + i)])
    assert "/jobs/low" in j.older.read_text()  # root's record now lives in .2
    got = read_matching(j, "/jobs")
    assert got is not None and [r.get("pid") for r in got] == [1]


def test_deep_flooded_paths_are_looked_up_once_per_directory(tmp_path: Path) -> None:
    """A flood of records 1,100 levels deep: each directory is looked at once, not once
    per record and level (a user cannot make rotation cost depth x records)."""
    mount = tmp_path / "cg"
    (mount / "deleg").mkdir(parents=True)
    calls: list[str] = []

    def path_of(cg: CgroupPath) -> str:
        calls.append(cg)
        return str(mount) if cg == "/" else str(mount) + cg

    own = cgroup_owner(path_of)
    deep = "/deleg" + "/d" * 1100
    owners = {own(f"{deep}/{i}") for i in range(200)}
    assert owners == {os.getuid()}
    assert len(calls) <= 1100 + 200 + 2, len(calls)
