"""The strict-priority walk, rule by rule, on hand-built snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from memcgctl.logic.decision import Candidate
from memcgctl.logic.priority import lowest_priority_child, rank_priority, select_priority
from memcgctl.render.reasontext import reason_lines, reason_text, verdict_text
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.reasons import GroupKill, LevelChoice, Lost, Skip, Tie, Verdict, Win
from tests.snapbuild import P, build

# (id, cgroups, processes, oom root, expected victim pid or None, expected walk levels)
CASES: list[tuple[str, dict[str, dict[str, Any]], list[P], str, int | None, list[str]]] = [
    (
        "lowest cgroup badness wins over usage",
        {"/a": {"badness": 100, "usage": 10}, "/b": {"badness": 200, "usage": 999}},
        [P(10, "/a", rss=1), P(20, "/b", rss=900)],
        "/",
        10,
        ["/", "/a"],
    ),
    (
        "cgroup tie: largest usage",
        {"/a": {"usage": 10}, "/b": {"usage": 30}, "/c": {"usage": 20}},
        [P(10, "/a"), P(20, "/b"), P(30, "/c")],
        "/",
        20,
        ["/", "/b"],
    ),
    (
        "cgroup tie on usage too: the one holding the lowest pid",
        {"/a": {"usage": 10}, "/b": {"usage": 10}},
        [P(40, "/a"), P(30, "/b"), P(50, "/b")],
        "/",
        30,
        ["/", "/b"],
    ),
    (
        "process tie: largest rss",
        {"/j": {}},
        [P(10, "/j", rss=5), P(11, "/j", rss=50), P(12, "/j", rss=20)],
        "/j",
        11,
        ["/j"],
    ),
    (
        "process tie on rss: lowest pid",
        {"/j": {}},
        [P(12, "/j", rss=5), P(11, "/j", rss=5), P(13, "/j", rss=5)],
        "/j",
        11,
        ["/j"],
    ),
    (
        "process badness beats rss",
        {"/j": {}},
        [P(10, "/j", rss=500), P(11, "/j", rss=1, badness=100)],
        "/j",
        11,
        ["/j"],
    ),
    (
        "cgroup vs process on equal badness: the cgroup",
        {"/j": {}, "/j/sub": {"badness": 300, "usage": 1}},
        [P(10, "/j", rss=999, badness=300), P(11, "/j/sub", rss=1)],
        "/j",
        11,
        ["/j", "/j/sub"],
    ),
    (
        "process strictly lower than every sibling cgroup",
        {"/j": {}, "/j/sub": {"badness": 300, "usage": 1}},
        [P(10, "/j", rss=1, badness=299), P(11, "/j/sub", rss=999)],
        "/j",
        10,
        ["/j"],
    ),
    (
        "badness 1000 cgroup is skipped even if lowest usage",
        {"/a": {"badness": 1000}, "/b": {"badness": 900}},
        [P(10, "/a", rss=999), P(20, "/b")],
        "/",
        20,
        ["/", "/b"],
    ),
    (
        "badness 1000 process is skipped",
        {"/j": {}},
        [P(10, "/j", rss=999, badness=1000), P(11, "/j", rss=1)],
        "/j",
        11,
        ["/j"],
    ),
    (
        "oom_score_adj -1000 counts as 1000",
        {"/j": {}},
        [P(10, "/j", rss=999, adj=-1000), P(11, "/j", rss=1)],
        "/j",
        11,
        ["/j"],
    ),
    (
        "empty subtree is skipped (lower badness, no process)",
        {"/empty": {"badness": 1}, "/empty/deep": {"badness": 1}, "/full": {"badness": 900}},
        [P(20, "/full")],
        "/",
        20,
        ["/", "/full"],
    ),
    (
        "subtree whose only processes are unkillable is skipped",
        {"/k": {"badness": 1}, "/full": {}},
        [P(10, "/k", killable=False), P(11, "/k", badness=1000), P(20, "/full")],
        "/",
        20,
        ["/", "/full"],
    ),
    (
        "subtree reachable only through a 1000 cgroup is skipped",
        {"/a": {"badness": 1}, "/a/never": {"badness": 1000}, "/b": {}},
        [P(10, "/a/never"), P(20, "/b")],
        "/",
        20,
        ["/", "/b"],
    ),
    (
        "init is never chosen",
        {},
        [P(1, "/", rss=999)],
        "/",
        None,
        ["/"],
    ),
    (
        "nested levels: descend three times",
        {
            "/a": {"badness": 400},
            "/a/x": {"badness": 700},
            "/a/y": {"badness": 600},
            "/a/y/z": {"badness": 50},
            "/b": {"badness": 450},
        },
        [
            P(5, "/a", badness=650),
            P(6, "/a/x"),
            P(7, "/a/y/z"),
            P(8, "/a/y", badness=10),
            P(9, "/b"),
        ],
        "/",
        8,
        ["/", "/a", "/a/y"],
    ),
    (
        "OOM root below the top: only its subtree",
        {"/a": {"badness": 1}, "/b": {"badness": 900}, "/b/c": {}},
        [P(10, "/a"), P(20, "/b/c")],
        "/b",
        20,
        ["/b", "/b/c"],
    ),
    (
        "nothing killable at all",
        {"/a": {"badness": 1000}},
        [P(10, "/a")],
        "/",
        None,
        ["/"],
    ),
]


@pytest.mark.parametrize(
    ("cgroups", "procs", "root", "victim", "levels"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_priority_rules(
    cgroups: dict[str, dict[str, Any]],
    procs: list[P],
    root: str,
    victim: int | None,
    levels: list[str],
) -> None:
    d = select_priority(build(cgroups, procs), CgroupPath(root))
    assert (d.victim.pid if d.victim else None) == victim
    assert [lv.cgroup for lv in d.walk] == levels
    if victim is not None:
        assert d.walk[-1].chosen is not None
        assert d.walk[-1].chosen.process is not None
        assert d.walk[-1].chosen.process.pid == victim
        assert d.group_pids == (victim,)
        assert d.kill_group is None


def test_walk_lists_every_candidate_with_verdicts() -> None:
    snap = build(
        {"/a": {"badness": 100, "usage": 5}, "/b": {"badness": 1000}, "/c": {"usage": 50}},
        [P(10, "/a"), P(20, "/b"), P(30, "/c"), P(40, "/", rss=9, badness=100)],
    )
    d = select_priority(snap, CgroupPath("/"))
    top = d.walk[0]
    names = [_name(c) for c in top.candidates]
    # eligible in rank order (cgroup /a before the process at equal badness), skipped last
    assert names == ["/a", "pid 40", "/c", "/b"]
    verdicts = {_name(c): c.verdict for c in top.candidates}
    assert verdicts["/a"].win == Win(100, tie=Tie.CGROUP_BEFORE_PROCESS)
    assert verdicts["pid 40"].lost == Lost.CGROUP_FIRST
    assert verdicts["/c"] == Verdict(lost=Lost.HIGHER_BADNESS, badness=500, chosen_badness=100)
    assert top.candidates[3].skip == Skip.BADNESS_NEVER
    assert verdicts["/b"] == Verdict(skip=Skip.BADNESS_NEVER)
    first = d.reasons[0]
    assert isinstance(first, LevelChoice)
    assert (first.cgroup, first.eligible, first.candidates, first.path) == ("/", 3, 4, "/a")
    # the words are the rendering layer's
    assert verdict_text(verdicts["/c"]) == "badness 500 > 100"
    assert reason_text(first).startswith("/: 3 killable of 4 candidates; cgroup /a has the")


@pytest.mark.parametrize(
    ("oom_group", "root", "group", "pids"),
    [
        # highest oom.group between the victim's cgroup and the OOM root
        ({"/svc": True, "/svc/web": True}, "/", "/svc", (10, 11, 12)),
        ({"/svc/web": True}, "/", "/svc/web", (10, 11)),
        # the OOM root itself counts, ancestors above it do not
        ({"/svc": True}, "/svc/web", None, (10,)),
        ({"/svc/web": True, "/svc": True}, "/svc/web", "/svc/web", (10, 11)),
        ({}, "/", None, (10,)),
    ],
)
def test_oom_group_kill(
    oom_group: dict[str, bool], root: str, group: str | None, pids: tuple[int, ...]
) -> None:
    cg: dict[str, dict[str, Any]] = {
        "/svc": {"oom_group": oom_group.get("/svc", False)},
        "/svc/web": {"oom_group": oom_group.get("/svc/web", False), "badness": 100},
    }
    snap = build(
        cg,
        [
            P(10, "/svc/web", rss=100),
            P(11, "/svc/web", rss=1),
            P(12, "/svc", rss=1),
            # never signalled by a group kill: -1000
            P(13, "/svc", adj=-1000),
        ],
    )
    d = select_priority(snap, CgroupPath(root))
    assert d.victim is not None and d.victim.pid == 10
    assert d.kill_group == group
    assert d.group_pids == pids
    if group:
        assert GroupKill(CgroupPath(group), len(pids)) in d.reasons
        assert any("memory.oom.group" in r for r in reason_lines(d.reasons))


def test_v1_never_group_kills() -> None:
    snap = build({"/svc": {}}, [P(10, "/svc"), P(11, "/svc")], version=1)
    d = select_priority(snap, CgroupPath("/"))
    assert d.kill_group is None and d.group_pids == (10,)


def test_exclude_and_rank_give_next_in_line() -> None:
    snap = build(
        {"/a": {"badness": 100}, "/b": {"badness": 200}},
        [P(10, "/a", rss=5), P(11, "/a", rss=9), P(20, "/b")],
    )
    assert [d.victim.pid for d in rank_priority(snap, CgroupPath("/"), 5) if d.victim] == [
        11,
        10,
        20,
    ]
    d = select_priority(snap, CgroupPath("/"), exclude={11, 10})
    assert d.victim is not None and d.victim.pid == 20
    # /a is now empty of candidates and says so
    skipped = {_name(c): c.skip for c in d.walk[0].candidates}
    assert skipped["/a"] == Skip.NOTHING_INSIDE


def test_missing_root_is_no_victim() -> None:
    d = select_priority(build({}, []), CgroupPath("/nope"))
    assert d.victim is None


def _name(c: Candidate) -> str:
    if c.process is not None:
        return f"pid {c.process.pid}"
    assert c.cgroup is not None
    return c.cgroup.path


@pytest.mark.parametrize(
    ("cgroups", "procs", "expected"),
    [
        # the same order as the walk: lowest badness, then largest usage, then lowest pid
        (
            {"/a": {"badness": 100, "usage": 1}, "/b": {"usage": 9}},
            [P(11, "/a"), P(12, "/b")],
            "/a",
        ),
        ({"/a": {"usage": 1}, "/b": {"usage": 9}}, [P(11, "/a"), P(12, "/b")], "/b"),
        ({"/a": {"usage": 5}, "/b": {"usage": 5}}, [P(40, "/a"), P(30, "/b")], "/b"),
        # never: badness 1000, nothing inside, only never-processes, only a never-cgroup
        ({"/a": {"badness": 1000, "usage": 9}, "/b": {}}, [P(11, "/a"), P(12, "/b")], "/b"),
        ({"/a": {"badness": 1}, "/b": {}}, [P(12, "/b")], "/b"),
        ({"/a": {"badness": 1}, "/b": {}}, [P(11, "/a", adj=-1000), P(12, "/b")], "/b"),
        ({"/a": {"badness": 1}, "/a/n": {"badness": 1000}}, [P(11, "/a/n")], None),
    ],
)
def test_lowest_priority_child_ranks_as_the_walk_does(
    cgroups: dict[str, dict[str, Any]], procs: list[P], expected: str | None
) -> None:
    snap = build(cgroups, procs)
    assert lowest_priority_child(snap, ROOT) == expected
    if expected is not None:  # the walk descends into the same child
        assert select_priority(snap, ROOT).walk[1].cgroup == expected
    assert lowest_priority_child(snap, CgroupPath("/nowhere")) is None
