"""The tree watch (daemon/treewatch.py) over a fixture tree: real inotify on the temp
directories (mkdir, rmdir, setxattr and writes report as on cgroupfs), the watch limit
(ENOSPC) and a lost queue (IN_Q_OVERFLOW) injected through a wrapped instance."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from memcgctl.daemon.treewatch import TreeWatch
from memcgctl.kernel import inotify as ino
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.state.store import OOM_DELAY, read_setting
from memcgctl.vocab.cgpath import CgroupPath
from tests.fakehost import FakeHost

Report = tuple[str, CgroupPath, dict[str, object]]


def cg(name: str) -> CgroupPath:
    return CgroupPath(name)


class LimitedInotify(ino.Inotify):
    """A real instance whose watches run out after ``room`` (ENOSPC, as the kernel
    says at fs.inotify.max_user_watches), and that can lose its queue."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room
        self.overflow = False

    def add(self, path: str, mask: int) -> int:
        if self.room <= 0:
            raise ino.WatchLimit(28, "inotify watches used up (fs.inotify.max_user_watches)")
        self.room -= 1
        return super().add(path, mask)

    def read(self) -> list[ino.Event]:
        events = super().read()
        if self.overflow:
            self.overflow = False
            events.append(ino.Event(-1, ino.IN_Q_OVERFLOW, 0, ""))
        return events


def make(host: FakeHost, room: int = 1 << 20) -> tuple[TreeWatch, list[Report], Any]:
    fs = host.env().fs
    reports: list[Report] = []
    made: list[LimitedInotify] = []

    def factory() -> ino.Inotify:
        made.append(LimitedInotify(room))
        return made[0]

    tw = TreeWatch(fs, cg("/"), lambda k, c, f: reports.append((k, c, f)), make_inotify=factory)
    return tw, reports, made[0]


def delays(tw: TreeWatch, fs: CgroupFs) -> dict[str, int]:
    def delay_of(c: CgroupPath) -> int | None:
        return read_setting(fs, c, OOM_DELAY).value

    return {str(k): v for k, v in tw.managed(delay_of, lambda: None).items()}


def drain(tw: TreeWatch) -> bool:
    wanted = False
    while True:
        before = tw.stats["events"]
        wanted |= tw.pump()
        if tw.stats["events"] == before:
            return wanted


def test_new_and_removed_cgroups_are_seen_without_a_walk(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/a", delay_ms=100)
    fake_v1.cgroup("/b")
    tw, reports, _ = make(fake_v1)
    fs = fake_v1.env().fs
    assert tw.refresh().full
    assert delays(tw, fs) == {"/a": 100}
    walks = tw.stats["walks"]

    fake_v1.cgroup("/b/c/d", delay_ms=0)  # a subtree made at once: listed, then watched
    assert drain(tw)
    p = tw.refresh()
    assert not p.full and set(p.created) >= {"/b/c", "/b/c/d"}
    assert delays(tw, fs) == {"/a": 100, "/b/c/d": 0}

    os.setxattr(fake_v1.path("/b"), "trusted.memcgctl.oom_delay_ms", b"50")  # IN_ATTRIB
    os.removexattr(fake_v1.path("/a"), "trusted.memcgctl.oom_delay_ms")
    assert drain(tw)
    tw.refresh()
    assert delays(tw, fs) == {"/b": 50, "/b/c/d": 0}

    shutil.rmtree(fake_v1.path("/b/c"))
    assert drain(tw)
    p = tw.refresh()
    assert {"/b/c", "/b/c/d"} <= p.removed
    assert delays(tw, fs) == {"/b": 50}
    assert "/b/c/d" not in tw.inodes
    assert tw.stats["walks"] == walks  # all of it without walking the tree
    assert reports == []


def test_a_rename_is_a_removal_and_a_creation(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/old/kid", delay_ms=7)
    tw, _, _ = make(fake_v1)
    fs = fake_v1.env().fs
    tw.refresh()
    assert delays(tw, fs) == {"/old/kid": 7}
    os.rename(fake_v1.path("/old"), fake_v1.path("/new"))
    assert drain(tw)
    tw.refresh()
    assert delays(tw, fs) == {"/new/kid": 7}
    os.setxattr(fake_v1.path("/new/kid"), "trusted.memcgctl.oom_delay_ms", b"8")
    assert drain(tw)  # the moved directory is watched under its new name
    tw.refresh()
    assert delays(tw, fs) == {"/new/kid": 8}


def test_a_lost_queue_makes_the_next_rescan_a_walk(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/a")
    tw, _, fake = make(fake_v1)
    fs = fake_v1.env().fs
    tw.refresh()
    delays(tw, fs)
    fake.overflow = True
    fake_v1.cgroup("/a/b")
    assert drain(tw)
    # what the lost events said: the walk finds it (here, made without any event)
    fake_v1.cgroup("/a/b/c", delay_ms=5)
    p = tw.refresh()
    assert p.full and tw.stats["overflows"] == 1
    assert delays(tw, fs) == {"/a/b/c": 5}
    assert not tw.refresh().full  # one walk, then events again


def test_watches_running_out_fall_back_to_a_walk_per_rescan(fake_v1: FakeHost) -> None:
    for i in range(5):
        fake_v1.cgroup(f"/c{i}", delay_ms=i)
    tw, reports, _ = make(fake_v1, room=3)
    fs = fake_v1.env().fs
    assert tw.refresh().full
    assert [r[0] for r in reports] == ["tree_watch_off"]
    assert "max_user_watches" in str(reports[0][2]["reason"])
    assert delays(tw, fs) == {f"/c{i}": i for i in range(5)}  # the walk saw them all
    fake_v1.cgroup("/late", delay_ms=9)
    assert not drain(tw)  # no watches: no events
    assert tw.refresh().full  # but every rescan walks, as before the watch
    assert delays(tw, fs)["/late"] == 9
    tw.follow(cg("/late"), cg("/late"), 1)  # nothing to follow any more
    assert len(reports) == 1  # said once


def test_each_whole_tree_walk_is_said_with_why(fake_v1: FakeHost) -> None:
    """A debug line per walk (the loop holds walks back during an episode; the v2
    test sees that from these lines), and none for a rescan of what events said."""
    fake_v1.cgroup("/a")
    now = [0.0]
    said: list[Report] = []
    made: list[LimitedInotify] = []

    def factory() -> ino.Inotify:
        made.append(LimitedInotify(1 << 20))
        return made[0]

    tw = TreeWatch(
        fake_v1.env().fs,
        cg("/"),
        lambda k, c, f: None,
        clock=lambda: now[0],
        make_inotify=factory,
        debug=lambda k, c, f: said.append((k, c, f)),
    )
    tw.refresh()
    fake_v1.cgroup("/a/b")
    assert drain(tw)
    tw.refresh()  # what the events said: no walk
    now[0] += 61.0
    tw.refresh()  # the safety net
    made[0].overflow = True
    fake_v1.cgroup("/a/c")
    assert drain(tw)
    tw.refresh()
    assert [(k, str(c), f["why"]) for k, c, f in said] == [
        ("tree_walk", "/", "start"),
        ("tree_walk", "/", "safety_net"),
        ("tree_walk", "/", "events_lost"),
    ]
    assert [f["walks"] for _, _, f in said] == [1, 2, 3] and tw.stats["walks"] == 3
    made[0].room = 0  # the watches run out (on the new cgroup): a walk per rescan
    fake_v1.cgroup("/a/d")
    assert drain(tw)
    tw.refresh()
    tw.refresh()
    assert [f["why"] for _, _, f in said[3:]] == ["no_watches", "no_watches"]


def test_a_followed_limit_written_wakes_the_daemon(fake_v2: FakeHost) -> None:
    fake_v2.cgroup("/svc", limit=64 << 20, delay_ms=0)
    tw, _, _ = make(fake_v2)
    tw.refresh()
    tw.follow(cg("/svc"), cg("/svc"), 2)
    (fake_v2.path("/svc") / "memory.max").write_text("32M\n")  # systemd's MemoryMax=
    assert drain(tw)
    tw.unfollow(cg("/svc"))
    drain(tw)
    (fake_v2.path("/svc") / "memory.max").write_text("16M\n")
    assert not drain(tw)  # released: no longer followed


def test_no_inotify_at_all_is_a_walk_per_rescan(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/a", delay_ms=1)
    reports: list[Report] = []

    def broken() -> ino.Inotify:
        raise OSError(24, "Too many open files")

    fs = fake_v1.env().fs
    tw = TreeWatch(fs, cg("/"), lambda k, c, f: reports.append((k, c, f)), make_inotify=broken)
    assert tw.fileno() == -1 and not tw.pump()
    assert tw.refresh().full and delays(tw, fs) == {"/a": 1}
    assert [r[0] for r in reports] == ["tree_watch_off"]


@pytest.mark.parametrize("n", [300])
def test_churn_is_followed_exactly(fake_v1: FakeHost, n: int) -> None:
    """mkdir/rmdir churn (more than one read batch): the known tree ends equal to a walk."""
    tw, _, _ = make(fake_v1)
    tw.refresh()
    for i in range(n):
        fake_v1.cgroup(f"/churn/x{i}")
        if i % 3:
            shutil.rmtree(fake_v1.path(f"/churn/x{i}"))
    drain(tw)
    tw.refresh()
    walked = {str(c) for c in fake_v1.env().fs.walk(cg("/"))}
    assert {str(c) for c in tw.inodes} == walked


def test_a_managed_cgroup_made_again_is_left_out_once_then_taken_again(
    fake_v1: FakeHost,
) -> None:
    """A unit restarting: its cgroup removed and made again between two rescans.  The
    daemon must let go of the old one (its fds) and take the new one over."""
    fake_v1.cgroup("/svc", delay_ms=0)
    tw, _, _ = make(fake_v1)
    fs = fake_v1.env().fs
    tw.refresh()
    assert delays(tw, fs) == {"/svc": 0}
    shutil.rmtree(fake_v1.path("/svc"))
    fake_v1.cgroup("/svc", delay_ms=0)
    assert drain(tw)
    p = tw.refresh()
    assert p.recreated == {cg("/svc")}
    assert delays(tw, fs) == {}  # released this time...
    assert tw.wants_rescan() and not tw.wants_rescan()
    assert delays(tw, fs) == {"/svc": 0}  # ...and taken over at the next rescan


def test_the_watch_takes_at_most_its_share_of_roots_watches(fake_v1: FakeHost) -> None:
    """A tree needing more than half of fs.inotify.max_user_watches (shared with every
    other root daemon) is walked instead: the daemon never starves systemd's watches."""
    for i in range(6):
        fake_v1.cgroup(f"/c{i}", delay_ms=i)
    reports: list[Report] = []
    fs = fake_v1.env().fs
    tw = TreeWatch(fs, cg("/"), lambda k, c, f: reports.append((k, c, f)), budget=4)
    assert tw.refresh().full
    assert [r[0] for r in reports] == ["tree_watch_off"]
    assert "max_user_watches" in str(reports[0][2]["reason"])
    assert delays(tw, fs) == {f"/c{i}": i for i in range(6)}
    assert ino.max_user_watches() > 0
    assert ino.max_user_watches("/nonexistent") == 8192


def test_touched_says_whether_a_subtree_may_hold_something_new() -> None:
    """The ports re-mark systemd-oomd's candidates below a valve only when its subtree
    may hold something new: after a walk, or when a cgroup was made there or its xattrs
    or owner changed (not at every rescan: that was a walk of each valve's domain)."""
    from memcgctl.daemon.treewatch import Pass, touched

    top = CgroupPath("/kubepods")
    assert touched(None, top) and touched(Pass(True), top)
    assert not touched(Pass(False), top)
    assert touched(Pass(False, created={CgroupPath("/kubepods/pod1"): 7}), top)
    assert touched(Pass(False, changed={CgroupPath("/kubepods/pod1/c")}), top)
    assert touched(Pass(False, changed={top}), top)
    assert not touched(Pass(False, changed={CgroupPath("/system.slice/x")}), top)
    assert not touched(Pass(False, removed={CgroupPath("/kubepods/pod1")}), top)


def test_the_mark_of_a_domain_moves_only_with_a_change_in_it(fake_v1: FakeHost) -> None:
    """The daemon's standing plan stands while its domain's mark is the same."""
    fake_v1.cgroup("/jobs/low")
    fake_v1.cgroup("/other")
    tw, _, fake = make(fake_v1)
    tw.refresh()
    jobs = cg("/jobs")
    first = tw.mark(jobs)
    assert first is not None
    fake_v1.cgroup("/other/new")  # elsewhere: the mark stays
    # queued events are read by mark() itself (e.g. the daemon's own write of a valve's
    # memory.high just before it chooses ahead); the loop still rescans for them
    assert tw.mark(jobs) == first and tw.stashed
    assert tw.pump() and not tw.stashed
    assert tw.mark(jobs) == first
    fake_v1.cgroup("/jobs/low/new")  # made in the domain
    drain(tw)
    second = tw.mark(jobs)
    assert second is not None and second != first
    os.setxattr(fake_v1.path("/jobs/low"), "trusted.memcgctl.badness", b"5")  # a badness
    drain(tw)
    third = tw.mark(jobs)
    assert third is not None and third != second
    shutil.rmtree(fake_v1.path("/jobs/low/new"))  # removed in the domain
    drain(tw)
    fourth = tw.mark(jobs)
    assert fourth is not None and fourth != third
    assert tw.mark(cg("/other")) != fourth  # its own changes
    fake.overflow = True  # events lost: every domain's mark moves
    os.setxattr(fake_v1.path("/other"), "trusted.memcgctl.badness", b"5")
    drain(tw)
    assert tw.mark(jobs) not in (None, fourth)
    tw.close()
    assert tw.mark(jobs) is None  # no watch: nothing can be told


def test_many_changed_cgroups_in_one_subtree_leave_another_domains_mark_alone(
    fake_v1: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond RECENT changed cgroups (a tenant's churn of names in its own subtree) the
    deepest are remembered as their parent's change: the tenant's domain's mark moves,
    another domain's stands (it moved with every event once RECENT were remembered)."""
    from memcgctl.daemon import treewatch

    monkeypatch.setattr(treewatch, "RECENT", 8)
    fake_v1.cgroup("/jobs/tenant")
    fake_v1.cgroup("/solo/low")
    tw, _, _ = make(fake_v1)
    tw.refresh()
    jobs, solo = cg("/jobs"), cg("/solo")
    fake_v1.cgroup("/solo/new")
    drain(tw)
    solo_mark, jobs_mark = tw.mark(solo), tw.mark(jobs)
    for i in range(30):  # 30 names, each made and removed
        fake_v1.cgroup(f"/jobs/tenant/e{i}")
        drain(tw)
        shutil.rmtree(fake_v1.path(f"/jobs/tenant/e{i}"))
        drain(tw)
        assert tw.mark(solo) == solo_mark
        now = tw.mark(jobs)
        assert now is not None and now != jobs_mark
        jobs_mark = now
    assert len(tw._changed) <= 8
    os.setxattr(fake_v1.path("/solo/low"), "trusted.memcgctl.badness", b"5")
    drain(tw)
    assert tw.mark(solo) not in (None, solo_mark)
    assert tw.mark(jobs) == jobs_mark
    tw.close()


def test_coarsened_changes_cover_every_domain_they_covered() -> None:
    """Property: for any domain, the coarsened changes give a mark at least as new as
    the exact ones (a plan is chosen again, never kept wrongly)."""
    from hypothesis import given
    from hypothesis import strategies as st

    from memcgctl.daemon.treewatch import coarsened

    names = st.lists(st.sampled_from("abc"), min_size=0, max_size=4)
    path = names.map(lambda p: cg("/" + "/".join(p)))

    def mark(changed: dict[CgroupPath, int], top: CgroupPath) -> int:
        return max((n for c, n in changed.items() if top.contains(c) or c.contains(top)), default=0)

    @given(st.lists(path, min_size=1, max_size=40), st.integers(1, 10), path)
    def check(seq: list[CgroupPath], keep: int, top: CgroupPath) -> None:
        changed: dict[CgroupPath, int] = {}
        for n, c in enumerate(seq, 1):
            changed.pop(c, None)
            changed[c] = n
        small = coarsened(changed, keep)
        assert len(small) <= max(keep, 1)
        assert list(small.values()) == sorted(small.values())
        assert mark(small, top) >= mark(changed, top)

    check()
