"""Cgroup files kept open (issue 22: a look at a managed memcg is a pread per file, not
open/read/close), against the real kernel: a kept file shows the value now; a cgroup
removed and made again under the same name is read afresh, never the old one's last
value; removed, it is gone.  On a fixture tree (not a cgroup file system) nothing is
kept: its files would keep their last content after removal."""

from __future__ import annotations

import os

import pytest

from memcgctl.kernel.cgroupfiles import V2_HIGH
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.hierarchy import Hierarchy
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import Vanished
from tests.fakehost import FakeHost
from tests.realkernel import TestCgroups


def limit_file(fs: CgroupFs) -> str:
    return "memory.limit_in_bytes" if fs.version == 1 else "memory.max"


@pytest.mark.kernel
def test_a_kept_file_reads_the_value_now_and_never_a_removed_cgroups(
    cgroups: TestCgroups,
) -> None:
    fs = CgroupFs(Hierarchy(cgroups.mount, cgroups.version, True))
    cg = CgroupPath(cgroups.make("kept", limit=64 << 20))
    names = (limit_file(fs), "memory.stat", "no.such.file")
    fs.keep_open(cg, names)
    try:
        assert {n for c, n in fs.kept() if c == cg} == set(names[:2])  # what exists
        assert fs.limit(cg) == 64 << 20
        cgroups.set_limit(cg, 32 << 20)
        assert fs.limit(cg) == 32 << 20  # read now, through the same fd
        assert "cache" in fs.memory_stat(cg) or "file" in fs.memory_stat(cg)
        if fs.version == 2:
            fs.keep_open(cg, (V2_HIGH,))
            fs.write(cg, V2_HIGH, str(16 << 20))
            assert fs.high(cg) == 16 << 20
        os.rmdir(cgroups.path(cg))
        with pytest.raises(Vanished):
            fs.limit(cg)  # gone: the kept fd fails, the path too
        assert (cg, limit_file(fs)) not in fs.kept()
        fs.keep_open(cg, names)  # nothing there to keep
        cgroups.make("kept", limit=48 << 20)  # made again, same name
        assert fs.limit(cg) == 48 << 20
        fs.keep_open(cg, names)
        os.rmdir(cgroups.path(cg))
        cgroups.make("kept", limit=40 << 20)  # and again, while a file was kept
        assert fs.limit(cg) == 40 << 20  # not the removed one's last value
    finally:
        fs.close_kept()
    assert fs.kept() == set()


def test_nothing_is_kept_on_a_fixture_tree(fake_v2: FakeHost) -> None:
    fs = fake_v2.env().fs
    fake_v2.cgroup("/jobs", limit=64 << 20)
    fs.keep_open(CgroupPath("/jobs"), ("memory.max",))
    assert fs.kept() == set()
    assert fs.limit(CgroupPath("/jobs")) == 64 << 20
