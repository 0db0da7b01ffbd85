"""Cgroup files kept open (issue 22: a look at a managed memcg is a pread per file, not
open/read/close), against the real kernel: a kept file shows the value now; a cgroup
removed and made again under the same name is read afresh, never the old one's last
value; removed, it is gone.  On a fixture tree (not a cgroup file system) nothing is
kept: its files would keep their last content after removal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from memcgctl.kernel.cgroupfiles import V2_HIGH
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.cgrouptree import KEEP_SPARE
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


@pytest.mark.kernel
def test_files_are_kept_within_the_budget_and_the_rest_read_by_path(
    cgroups: TestCgroups,
) -> None:
    """No more than keep_max files are kept (the fds a watch, a pidfd or a kill needs
    come first); a file over the budget is read by its path, the value now."""
    fs = CgroupFs(Hierarchy(cgroups.mount, cgroups.version, True))
    fs.keep_max = 1
    a = CgroupPath(cgroups.make("a", limit=64 << 20))
    b = CgroupPath(cgroups.make("b", limit=32 << 20))
    try:
        fs.keep_open(a, (limit_file(fs), "memory.stat"))
        fs.keep_open(b, (limit_file(fs),))
        assert fs.kept() == {(a, limit_file(fs))}
        cgroups.set_limit(b, 16 << 20)
        assert fs.limit(a) == 64 << 20 and fs.limit(b) == 16 << 20
    finally:
        fs.close_kept()


def with_soft_nofile(soft: int, code: str) -> str:
    """What ``code`` prints in a fresh interpreter whose soft RLIMIT_NOFILE is ``soft``
    (the hard one as it is: ``hard`` in the code)."""
    head = (
        "import resource\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, hard))\n"
    )
    out = subprocess.run([sys.executable, "-c", head + code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_budget_is_half_the_open_files_beyond_the_spare() -> None:
    """From the soft RLIMIT_NOFILE: 1024 (systemd's default) keeps 384."""
    code = "from memcgctl.kernel.cgrouptree import keep_budget\nprint(keep_budget())\n"
    assert int(with_soft_nofile(1024, code)) == (1024 - KEEP_SPARE) // 2 == 384


def test_the_daemon_raises_its_soft_limit_on_open_files_to_the_hard_one() -> None:
    code = (
        "from memcgctl.daemon.main import more_files\n"
        "want = 4096 if hard == resource.RLIM_INFINITY else hard\n"
        "more_files()\n"
        "soft, after = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "print(soft >= want and soft > 256 and after == hard)\n"
    )
    assert with_soft_nofile(256, code) == "True"


def test_nothing_is_kept_on_a_fixture_tree(fake_v2: FakeHost) -> None:
    fs = fake_v2.env().fs
    fake_v2.cgroup("/jobs", limit=64 << 20)
    fs.keep_open(CgroupPath("/jobs"), ("memory.max",))
    assert fs.kept() == set()
    assert fs.limit(CgroupPath("/jobs")) == 64 << 20
