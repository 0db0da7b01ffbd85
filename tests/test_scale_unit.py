"""Issue 22: the one-pass computations that replace per-cgroup scans give the same
answers as those scans (hypothesis, random trees and kill records)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.cells import cell_len

from memcgctl.logic import priority
from memcgctl.logic.counters import by_cause_many, subtree_sum, subtree_sums
from memcgctl.logic.events import in_subtree
from memcgctl.logic.kernelheuristic import select_kernel
from memcgctl.logic.priority import (
    LISTED_EMPTY,
    lowest_priority_child,
    plan_inputs,
    rank_priority,
    select_priority,
    select_priority_brief,
)
from memcgctl.render.output import Output, plain_table, print_table
from memcgctl.render.reasontext import reason_text
from memcgctl.snapshot import LazyCgroups, LazyProcesses, kernel_params, take_snapshot
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.reasons import LevelChoice, Skip
from memcgctl.watch.tally import _topmost
from tests.fakehost import FakeHost

NAMES = st.sampled_from(["a", "b", "a-x", "a.b", "ab", "c"])


@st.composite
def trees(draw: st.DrawFn) -> list[CgroupPath]:
    """A pre-order list of cgroups (parents before children), root first."""
    paths = [CgroupPath("/")]
    for _ in range(draw(st.integers(0, 25))):
        parent = draw(st.sampled_from(paths))
        child = parent.child(draw(NAMES))
        if child not in paths:
            paths.append(child)
    return sorted(paths, key=lambda p: p.split("/"))  # pre-order by component lists


@given(trees(), st.data())
@settings(max_examples=200, deadline=None)
def test_subtree_sums_equal_one_scan_per_cgroup(
    order: list[CgroupPath], data: st.DataObject
) -> None:
    local = {
        cg: {"oom_kill": data.draw(st.integers(0, 5)), "oom": data.draw(st.integers(0, 5))}
        for cg in order
        if data.draw(st.booleans()) or cg == "/"
    }
    present = [cg for cg in order if cg in local]
    # the walk only records what it could read; a vanished parent cuts its subtree off
    kept = [cg for cg in present if all(a in local for a in cg.ancestors())]
    got = subtree_sums(kept, {cg: local[cg] for cg in kept})
    for cg in kept:
        assert got[cg] == subtree_sum(cg, {c: local[c] for c in kept})


@given(trees(), st.lists(st.tuples(st.text("ab/-.", max_size=8), st.integers(0, 3)), max_size=12))
@settings(max_examples=200, deadline=None)
def test_by_cause_many_equals_one_scan_per_cgroup(
    cgs: list[CgroupPath], kills: list[tuple[str, int]]
) -> None:
    per: dict[str, dict[str, int]] = {}
    for where, n in kills:
        c = per.setdefault(where, {"system": 0, "memcg": 0, "user": 0})
        c["memcg"] += n
        c["user"] += 1
    extra = {"system": 2, "memcg": 0, "user": 0}
    got = by_cause_many(cgs, per, extra)
    for cg in cgs:
        want = dict(extra) if cg.is_root else {"system": 0, "memcg": 0, "user": 0}
        for other, causes in per.items():
            if in_subtree(other, cg):
                for k, v in causes.items():
                    want[k] += v
        assert got[cg] == want


@given(trees(), st.data())
@settings(max_examples=200, deadline=None)
def test_topmost(order: list[CgroupPath], data: st.DataObject) -> None:
    asked = data.draw(st.lists(st.sampled_from(order), min_size=1))
    top = _topmost(asked)
    for cg in asked:  # every cgroup asked for is below exactly one topmost one
        assert sum(t.contains(cg) for t in top) == 1
    for t in top:
        assert t in asked and not any(o != t and o.contains(t) for o in asked)


def test_plain_tables_measure_wide_characters_only_when_there_are_some(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """print_table skips wcwidth for tables of one-column characters (box guides
    included) and still aligns a table with wide ones drawn later in the same process."""
    out = Output(plain=True)
    print_table(out, ["name", "n"], [["├─ ascii", "1"], ["└─ b", "22"]], right_align=[1])
    print_table(out, ["name", "n"], [["漢字", "1"], ["ab", "22"]], right_align=[1])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6
    for table in (lines[:3], lines[3:]):
        # right-aligned last column: every line ends at the same terminal column
        # (漢字 is four columns wide: padded as "abcd" would be)
        assert len({cell_len(line) for line in table}) == 1, table
    assert lines[4].startswith("漢字 ") and lines[5].endswith("22")


CELL = st.text(alphabet=st.sampled_from(list("ab /-.x1├─└│ ")), max_size=6)


@given(
    st.integers(1, 4).flatmap(
        lambda n: st.tuples(
            st.lists(CELL, min_size=n, max_size=n),
            st.lists(st.lists(CELL, min_size=n, max_size=n), min_size=1, max_size=5),
            st.lists(st.sampled_from(["left", "right"]), min_size=n, max_size=n),
        )
    )
)
@settings(max_examples=300, deadline=None)
def test_plain_table_is_tabulates_plain_layout(
    table: tuple[list[str], list[list[str]], list[str]],
) -> None:
    import tabulate

    headers, rows, aligns = table
    tabulate.PRESERVE_WHITESPACE = True
    kwargs: dict[str, Any] = {
        "headers": headers,
        "tablefmt": "plain",
        "colalign": aligns,
        "disable_numparse": True,
    }
    try:  # a keyword since tabulate 0.10; the global above before
        want = tabulate.tabulate(rows, **{**kwargs, "preserve_whitespace": True})
    except TypeError:
        want = tabulate.tabulate(rows, **kwargs)
    assert plain_table(headers, rows, aligns) == want


# -- lazy selection (issue 22): the same victims from a snapshot that reads processes
# only when the walk looks at them ---------------------------------------------------

BADNESS = st.sampled_from([None, 0, 100, 500, 500, 1000])


@st.composite
def hosts(draw: st.DrawFn) -> list[tuple[str, dict[str, Any]]]:
    """A random tree: (cgroup, settings) parents first, and processes in it."""
    cgs = ["/"]
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(draw(st.integers(0, 10))):
        parent = draw(st.sampled_from(cgs))
        cg = f"{parent.rstrip('/')}/c{i}"
        cgs.append(cg)
        out.append(
            (cg, {"badness": draw(BADNESS), "usage": draw(st.sampled_from([0, 10, 20])) << 20})
        )
    for pid in range(100, 100 + draw(st.integers(0, 14))):
        out.append(
            (
                draw(st.sampled_from(cgs)),
                {
                    "pid": pid,
                    "rss_anon_kb": draw(st.sampled_from([1000, 2000])),
                    "oom_score_adj": draw(st.sampled_from([0, 0, 500, -1000])),
                    "kthread": draw(st.sampled_from([False, False, False, True])),
                },
            )
        )
    return out


def layout_host(base: Path, layout: list[tuple[str, dict[str, Any]]]) -> FakeHost:
    """The fixture host a drawn layout describes (cgroups at 512 MiB, processes)."""
    host = FakeHost(base, version=1)
    for cg, kw in layout:
        if "pid" in kw:
            host.process(kw.pop("pid"), cg, **kw)
        else:
            host.cgroup(cg, limit=512 << 20, **kw)
    return host


@given(hosts(), st.integers(1, 3))
@settings(max_examples=30, deadline=None)
def test_lazy_selection_is_the_full_snapshots_selection(
    layout: list[tuple[str, dict[str, Any]]], top: int
) -> None:
    base = Path(tempfile.mkdtemp(prefix="memcgctl-lazy-"))
    try:
        env = layout_host(base, layout).env()
        roots = [CgroupPath("/"), *(CgroupPath(cg) for cg, kw in layout if "usage" in kw)]
        for root in roots:
            full = take_snapshot(env.fs, env.proc, env.registry, root)
            lazy = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
            assert isinstance(lazy.processes, LazyProcesses)
            assert select_priority(lazy, root) == select_priority(full, root)
            assert rank_priority(lazy, root, top) == rank_priority(full, root, top)
            gone = list(full.processes)[:1]
            assert select_priority(lazy, root, gone) == select_priority(full, root, gone)
            assert lowest_priority_child(lazy, root) == lowest_priority_child(full, root)
            assert lazy.processes.read_count <= len(full.cgroups[root].pids) + sum(
                len(c.pids) for c in full.cgroups.values()
            )
            # the daemon's brief walk: the same victim, whatever it did not look into
            excluded: list[list[int]] = [[], gone]
            for excl in excluded:
                brief = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
                b, f = select_priority_brief(brief, root, excl), select_priority(full, root, excl)
                assert (b.victim, b.kill_group, b.group_pids) == (
                    f.victim,
                    f.kill_group,
                    f.group_pids,
                )
                assert b == select_priority_brief(full, root, excl)  # lazy or not, one walk
                if b.victim is None:
                    assert b.reasons == f.reasons
            params = kernel_params(env.proc, full)
            lazy2 = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
            assert select_kernel(lazy2, root, params) == select_kernel(full, root, params)
    finally:
        shutil.rmtree(base)


@given(hosts(), st.integers(1, 4))
@settings(max_examples=150, deadline=None)
def test_the_brief_walk_ranks_victims_as_the_full_one(
    layout: list[tuple[str, dict[str, Any]]], top: int
) -> None:
    """The daemon's escalation asks for the next victim after the earlier ones: the
    brief walk gives the same sequence as the full one, from every cgroup as the root."""
    base = Path(tempfile.mkdtemp(prefix="memcgctl-brief-"))
    try:
        env = layout_host(base, layout).env()
        for root in [CgroupPath("/"), *(CgroupPath(cg) for cg, kw in layout if "usage" in kw)]:
            full = take_snapshot(env.fs, env.proc, env.registry, root)
            want = [d.victim for d in rank_priority(full, root, top)]
            gone: list[int] = []
            for victim in want:
                lazy = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
                d = select_priority_brief(lazy, root, gone)
                assert d.victim == victim
                assert victim is not None
                gone.append(victim.pid)
            lazy = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
            assert select_priority_brief(lazy, root, gone).victim == (
                select_priority(full, root, gone).victim
            )
    finally:
        shutil.rmtree(base)


def test_the_lazy_walk_reads_few_processes_of_a_big_tree(fake_v1: FakeHost) -> None:
    """60 cgroups with 5 processes each beside a low-badness one: the walk compares the
    61 siblings (one process read per subtree to see it holds something killable)
    and reads the chosen one's; not more."""
    for i in range(60):
        fake_v1.cgroup(f"/pods/p{i:03}", badness=500, usage=1 << 20)
        for j in range(5):
            fake_v1.process(1000 + i * 10 + j, f"/pods/p{i:03}", rss_anon_kb=1000 + j)
    fake_v1.cgroup("/pods/low", badness=10, usage=1 << 20)
    fake_v1.process(99, "/pods/low", rss_anon_kb=10)
    env = fake_v1.env()
    lazy = take_snapshot(env.fs, env.proc, env.registry, CgroupPath("/"), lazy=True)
    d = select_priority(lazy, CgroupPath("/"))
    assert d.victim is not None and d.victim.pid == 99
    assert isinstance(lazy.processes, LazyProcesses)
    assert lazy.processes.read_count <= 61 + 1  # of 301 processes


def test_the_brief_walk_reads_only_what_it_compares(fake_v1: FakeHost) -> None:
    """The daemon's walk over 60 pods with 5 processes each, most of them empty, beside
    a low-badness one: it reads every pod's badness, but only the chosen cgroup in
    full (and its process); the full walk reads every pod to check it holds something
    killable.  Both choose the same victim; the brief one says how many it passed
    over without looking."""
    for i in range(60):
        fake_v1.cgroup(f"/pods/p{i:03}", badness=500, usage=1 << 20)
        for c in range(3):
            fake_v1.cgroup(f"/pods/p{i:03}/c{c}", usage=1 << 20)
        if i % 10 == 0:
            fake_v1.process(1000 + i, f"/pods/p{i:03}/c2", rss_anon_kb=1000)
    fake_v1.cgroup("/pods/never", badness=1000, usage=1 << 20)
    fake_v1.process(98, "/pods/never", rss_anon_kb=10)
    fake_v1.cgroup("/pods/low", badness=10, usage=1 << 20)
    fake_v1.process(99, "/pods/low", rss_anon_kb=10)
    env = fake_v1.env()
    root = CgroupPath("/pods")
    lazy = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
    d = select_priority_brief(lazy, root)
    assert d.victim is not None and d.victim.pid == 99
    assert isinstance(lazy.cgroups, LazyCgroups) and isinstance(lazy.processes, LazyProcesses)
    assert lazy.cgroups.read_count == 2  # /pods and /pods/low
    assert lazy.processes.read_count == 1
    choice = d.reasons[0]
    assert isinstance(choice, LevelChoice)
    assert (choice.eligible, choice.candidates, choice.unchecked) == (1, 62, 61)
    assert "61 ranked after it, not looked into" in reason_text(choice)
    full = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
    assert select_priority(full, root).victim == d.victim
    assert isinstance(full.cgroups, LazyCgroups)
    assert full.cgroups.read_count > 60  # every pod; their empty containers by the probe


def test_the_brief_walk_looks_into_ties_and_past_empty_subtrees(fake_v1: FakeHost) -> None:
    """Equal badness: the largest usage is looked into first; when it holds nothing
    killable the next one is, and a tie in usage is broken by the lowest pid inside,
    as in the full walk."""
    fake_v1.cgroup("/big", usage=30 << 20)  # empty: skipped, nothing inside
    fake_v1.cgroup("/big/x", usage=30 << 20)
    fake_v1.cgroup("/t1", usage=20 << 20)
    fake_v1.process(300, "/t1", rss_anon_kb=1000)
    fake_v1.cgroup("/t2", usage=20 << 20)
    fake_v1.process(200, "/t2", rss_anon_kb=1000)
    fake_v1.cgroup("/small", usage=10 << 20)
    fake_v1.process(100, "/small", rss_anon_kb=1000)
    env = fake_v1.env()
    root = CgroupPath("/")
    full = take_snapshot(env.fs, env.proc, env.registry, root)
    lazy = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
    d = select_priority_brief(lazy, root)
    assert d.victim is not None and d.victim.pid == 200
    assert d.victim == select_priority(full, root).victim
    top = d.walk[0]
    assert [c.cgroup.path for c in top.candidates if c.cgroup] == ["/t2", "/t1", "/big"]
    assert [c.skip for c in top.candidates] == [None, None, Skip.NOTHING_INSIDE]
    choice = d.reasons[0]
    assert isinstance(choice, LevelChoice) and choice.unchecked == 1  # /small
    # /small's usage was read alone, not the rest of it; nor any process of it
    assert isinstance(lazy.cgroups, LazyCgroups)
    # /, /big, /t1, /t2 in full; /big/x (no process, no child) by the emptiness probe
    assert lazy.cgroups.read_count == 4
    # /small's usage was read to rank it, its processes not: those of /t1 and /t2 only
    assert isinstance(lazy.processes, LazyProcesses) and lazy.processes.read_count == 2


def test_the_brief_walk_over_equal_pods_reads_their_usage_only(fake_v1: FakeHost) -> None:
    """Every pod at the default badness: the walk ranks them by usage (one file read
    each) and reads in full only the largest, where it finds its victim."""
    for i in range(60):
        fake_v1.cgroup(f"/pods/p{i:03}", usage=(i % 7 + 1) << 20)
        fake_v1.cgroup(f"/pods/p{i:03}/c0", usage=(i % 7 + 1) << 20)
        fake_v1.process(1000 + i, f"/pods/p{i:03}/c0", rss_anon_kb=1000)
    fake_v1.cgroup("/pods/big", usage=64 << 20)
    fake_v1.process(99, "/pods/big", rss_anon_kb=60_000)
    env = fake_v1.env()
    root = CgroupPath("/pods")
    lazy = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
    d = select_priority_brief(lazy, root)
    assert d.victim is not None and d.victim.pid == 99
    full = take_snapshot(env.fs, env.proc, env.registry, root)
    assert select_priority(full, root).victim == d.victim
    assert isinstance(lazy.cgroups, LazyCgroups) and lazy.cgroups.read_count == 2


def test_between_ranking_and_reading_a_new_badness_counts_and_the_usage_is_kept(
    fake_v1: FakeHost,
) -> None:
    """One snapshot, one reading: a cgroup ranked by its usage keeps that usage when
    read in full.  Not its badness: one that became 1000 (never) in between is
    skipped, and one that vanished is passed over; the walk goes on to the next."""
    fake_v1.cgroup("/a", usage=30 << 20)
    fake_v1.process(100, "/a", rss_anon_kb=1000)
    fake_v1.cgroup("/b", usage=20 << 20)
    fake_v1.process(200, "/b", rss_anon_kb=1000)
    fake_v1.cgroup("/c", usage=10 << 20)
    fake_v1.process(300, "/c", rss_anon_kb=1000)
    env = fake_v1.env()
    root = CgroupPath("/")
    snap = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
    kids = [CgroupPath(cg) for cg in ("/a", "/b", "/c")]
    assert [snap.usage_of(cg) for cg in kids] == [30 << 20, 20 << 20, 10 << 20]
    assert {snap.badness_of(cg) for cg in kids} == {(500, "default")}
    fake_v1.cgroup("/a", usage=1 << 20, badness=1000)  # now never, and smaller
    fake_v1.cgroup("/c", usage=90 << 20)  # now the largest: too late for this walk
    shutil.rmtree(fake_v1.path("/b"))
    d = select_priority_brief(snap, root)
    assert d.victim is not None and d.victim.pid == 300
    top = d.walk[0]
    assert [(c.cgroup.path if c.cgroup else None, c.skip) for c in top.candidates] == [
        ("/c", None),
        ("/a", Skip.BADNESS_NEVER),
    ]
    a = snap.cgroups[CgroupPath("/a")]
    c = snap.cgroups[CgroupPath("/c")]
    assert (a.usage_bytes, c.usage_bytes) == (30 << 20, 10 << 20)  # as ranked
    assert a.badness == 1000  # as it is now


@given(hosts(), st.integers(0, 2))
@settings(max_examples=150, deadline=None)
def test_the_brief_walk_with_the_emptiness_probe_chooses_as_the_full_one(
    layout: list[tuple[str, dict[str, Any]]], listed: int
) -> None:
    """Beyond LISTED_EMPTY skipped candidates at a level (set low here: random trees
    are small), the brief walk tells an empty cgroup by the snapshot's probe alone
    (no process, no child cgroup) and skips it unlisted: the same victim, group and
    sequence of victims as the full walk; the same decision from a lazy snapshot (the
    probe reads the link count and cgroup.procs) as from a full one; and no standing
    plan inputs for a decision that skipped some unlisted."""
    base = Path(tempfile.mkdtemp(prefix="memcgctl-probe-"))
    try:
        env = layout_host(base, layout).env()
        with patch.object(priority, "LISTED_EMPTY", listed):
            for root in [CgroupPath("/"), *(CgroupPath(cg) for cg, kw in layout if "usage" in kw)]:
                full = take_snapshot(env.fs, env.proc, env.registry, root)
                gone: list[int] = []
                while True:
                    lazy = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
                    b, f = (
                        select_priority_brief(lazy, root, gone),
                        select_priority(full, root, gone),
                    )
                    assert (b.victim, b.kill_group, b.group_pids) == (
                        f.victim,
                        f.kill_group,
                        f.group_pids,
                    )
                    assert b == select_priority_brief(full, root, gone)
                    if any(lv.unlisted for lv in b.walk):
                        assert plan_inputs(b) == ()
                    if b.victim is None:
                        break
                    gone.append(b.victim.pid)
    finally:
        shutil.rmtree(base)


def test_the_brief_walk_probes_a_tenants_empty_cgroups_beyond_the_listed_ones(
    fake_v1: FakeHost,
) -> None:
    """300 empty cgroups ranked first beside the work: the brief walk reads LISTED_EMPTY
    of them in full (listed as skipped) and tells the rest by the probe (a link count
    and an empty cgroup.procs each), then chooses the work's process, as the full walk
    does after reading all 300."""
    fake_v1.cgroup("/jobs", limit=512 << 20)
    for i in range(300):
        fake_v1.cgroup(f"/jobs/e{i:03}", badness=1)
    fake_v1.cgroup("/jobs/work", badness=500, usage=1 << 20)
    fake_v1.process(10, "/jobs/work", rss_anon_kb=1000)
    env = fake_v1.env()
    root = CgroupPath("/jobs")
    lazy = take_snapshot(env.fs, env.proc, env.registry, root, lazy=True)
    d = select_priority_brief(lazy, root)
    assert d.victim is not None and d.victim.pid == 10
    assert (
        d.victim
        == select_priority(take_snapshot(env.fs, env.proc, env.registry, root), root).victim
    )
    assert isinstance(lazy.cgroups, LazyCgroups)
    assert lazy.cgroups.read_count == 1 + LISTED_EMPTY + 1  # /jobs, the listed, /jobs/work
    top = d.walk[0]
    assert top.unlisted == 300 - LISTED_EMPTY
    assert sum(c.skip is Skip.NOTHING_INSIDE for c in top.candidates) == LISTED_EMPTY
    choice = d.reasons[0]
    assert isinstance(choice, LevelChoice) and choice.candidates == 301
