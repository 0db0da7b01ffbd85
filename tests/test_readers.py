"""Readers and snapshot on fixture trees: v1, v2 and hybrid layouts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from memcgctl.kernel.hierarchy import detect_hierarchy, parse_mountinfo
from memcgctl.kernel.procfs import parse_stat_starttime, parse_status
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import NoSuchCgroup, NotSupported, UsageProblem
from tests.fakehost import FakeHost


def test_detects_v1_memory_mount(fake_v1: FakeHost) -> None:
    h = detect_hierarchy(fake_v1.proc)
    assert (h.mount, h.version) == (fake_v1.cgroot, 1)


def test_detects_v2_with_memory(fake_v2: FakeHost) -> None:
    h = detect_hierarchy(fake_v2.proc)
    assert (h.mount, h.version, h.has_memory) == (fake_v2.cgroot, 2, True)


def test_hybrid_prefers_v1_memory_over_cgroup2_without_memory(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, version=1, hybrid=True)
    h = detect_hierarchy(host.proc)
    assert (h.mount, h.version) == (host.cgroot, 1)


def test_no_memory_controller_is_not_supported(tmp_path: Path) -> None:
    host = FakeHost(tmp_path, version=1)
    (host.proc / "self/mountinfo").write_text("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
    with pytest.raises(NotSupported):
        detect_hierarchy(host.proc)


def test_mountinfo_unescapes_octal_and_keeps_root_field() -> None:
    text = "30 23 0:28 /sub /sys/fs/cg\\040x rw - cgroup cgroup rw,memory\n"
    assert parse_mountinfo(text) == [("cgroup", "/sys/fs/cg x", "/sub", "rw,memory")]


def test_container_mount_root_is_stripped_from_proc_paths(fake_v1: FakeHost) -> None:
    mi = fake_v1.proc / "self/mountinfo"
    mi.write_text(
        mi.read_text().replace(" / " + str(fake_v1.cgroot), " /pod1 " + str(fake_v1.cgroot))
    )
    fs = fake_v1.env().fs
    assert fs.from_proc_path("/pod1/app") == "/app"
    assert fs.from_proc_path("/pod1") == "/"


@pytest.mark.parametrize("name", ["/a/b", "a/b", "a//b/", "./a/b"])
def test_resolve_accepts_hierarchy_paths(fake_v1: FakeHost, name: str) -> None:
    fake_v1.cgroup("/a/b")
    assert fake_v1.env().fs.resolve(name) == "/a/b"


def test_resolve_accepts_absolute_path_under_mount(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/a/b")
    fs = fake_v1.env().fs
    assert fs.resolve(str(fake_v1.cgroot / "a/b")) == "/a/b"
    assert fs.resolve(str(fake_v1.cgroot)) == "/"


@pytest.mark.parametrize("name", ["..", "/a/../..", "a/../../etc"])
def test_resolve_refuses_dotdot(fake_v1: FakeHost, name: str) -> None:
    fake_v1.cgroup("/a")
    with pytest.raises(UsageProblem):
        fake_v1.env().fs.resolve(name)


def test_resolve_refuses_symlinks(fake_v1: FakeHost, tmp_path: Path) -> None:
    fake_v1.cgroup("/a")
    os.symlink(fake_v1.cgroot / "a", fake_v1.cgroot / "link")
    with pytest.raises(UsageProblem, match="symbolic link"):
        fake_v1.env().fs.resolve("/link")


def test_resolve_refuses_other_directories(fake_v1: FakeHost, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    with pytest.raises(UsageProblem, match="not in the memory cgroup hierarchy"):
        fake_v1.env().fs.resolve(str(other))


def test_resolve_missing_is_not_found(fake_v1: FakeHost) -> None:
    with pytest.raises(NoSuchCgroup):
        fake_v1.env().fs.resolve("/nope")


def test_v1_snapshot_reads_limits_oom_state_and_members(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/batch", limit=64 << 20, usage=10 << 20, under_oom=True, oom_kill=2)
    fake_v1.process(100, "/batch", comm="job", rss_anon_kb=1000, rss_file_kb=20, swap_kb=5)
    fake_v1.process(2, "/", comm="kthreadd", kthread=True)
    snap = fake_v1.env().snapshot()
    b = snap.cgroups[CgroupPath("/batch")]
    assert (b.limit_bytes, b.usage_bytes, b.under_oom, b.oom_kills_local) == (
        64 << 20,
        10 << 20,
        True,
        2,
    )
    assert snap.cgroups[CgroupPath("/")].limit_bytes is None  # v1 "unlimited"
    assert b.pids == (100,)
    p = snap.processes[100]
    assert (p.comm, p.cgroup, p.rss_kb, p.swap_kb, p.killable) == ("job", "/batch", 1020, 5, True)
    assert snap.processes[2].killable is False


def test_v2_snapshot_reads_events_and_oom_group(fake_v2: FakeHost) -> None:
    fake_v2.cgroup(
        "/svc",
        limit=1 << 30,
        oom_group=True,
        events={"oom": 3, "oom_kill": 2},
        events_local={"oom_kill": 1},
    )
    snap = fake_v2.env().snapshot()
    s = snap.cgroups[CgroupPath("/svc")]
    assert (s.limit_bytes, s.oom_group, s.under_oom) == (1 << 30, True, None)
    assert s.events["oom"] == 3 and s.oom_kills_local == 1
    assert snap.cgroups[CgroupPath("/")].limit_bytes is None  # the v2 root has no memory.max


def test_init_and_kernel_threads_are_not_killable(fake_v1: FakeHost) -> None:
    fake_v1.process(1, "/", comm="init", rss_anon_kb=100)
    snap = fake_v1.env().snapshot()
    assert snap.processes[1].killable is False


def test_vanished_process_is_skipped(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/a")
    fake_v1.process(10, "/a")
    # listed in cgroup.procs but gone from /proc: absent, not an error
    (fake_v1.cgroot / "a/cgroup.procs").write_text("10\n11\n")
    snap = fake_v1.env().snapshot()
    assert sorted(snap.processes) == [10]


def test_vanished_cgroup_below_root_is_skipped(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/a")
    d = fake_v1.cgroup("/a/gone")
    for f in d.iterdir():
        f.unlink()  # a directory without files behaves like one removed mid-walk
    snap = fake_v1.env().snapshot()
    assert "/a" in snap.cgroups


def test_parse_status_without_mm() -> None:
    st = parse_status(b"Name:\tkworker/0:1\nUid:\t0\t0\t0\t0\nKthread:\t1\n")
    assert (st.name, st.has_mm, st.kthread) == ("kworker/0:1", False, True)


def test_parse_stat_comm_with_parens_and_spaces() -> None:
    fields = ["S"] + ["0"] * 18 + ["4242"] + ["0"] * 5
    data = b"77 (a ) (b) c) " + " ".join(fields).encode()
    assert parse_stat_starttime(data) == 4242


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (None, "-"),
        (0, "0B"),
        (1023, "1023B"),
        (1024, "1.0K"),
        (1073000000, "1023.3M"),
        ((1 << 30) - 1, "1.0G"),
        (5 << 30, "5.0G"),
        (300 << 20, "300.0M"),
    ],
)
def test_format_bytes(n: int | None, text: str) -> None:
    from memcgctl.vocab.units import format_bytes

    assert format_bytes(n) == text
