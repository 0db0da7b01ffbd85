"""The badness/delay store: xattrs with the delegation rule, the process registry."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.state.store import (
    BADNESS,
    OOM_DELAY,
    ProcessRegistry,
    Setting,
    read_setting,
    write_setting,
)
from memcgctl.vocab.cgpath import CgroupPath
from tests.fakehost import FakeHost


def cgroup_badness(fs: CgroupFs, cg: CgroupPath) -> Setting:
    """The cgroup's own badness and where it came from (None: unset, the default)."""
    return read_setting(fs, cg, BADNESS)


def test_unset_is_default(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/a")
    fs = fake_v1.env().fs
    assert cgroup_badness(fs, CgroupPath("/a")) == (None, "default")
    assert read_setting(fs, CgroupPath("/a"), OOM_DELAY).value is None


def test_trusted_wins_over_user(fake_v1: FakeHost) -> None:
    d = fake_v1.cgroup("/a")
    os.setxattr(d, "user.memcgctl.badness", b"10")
    fs = fake_v1.env().fs
    assert cgroup_badness(fs, CgroupPath("/a")) == (10, "user")
    os.setxattr(d, "trusted.memcgctl.badness", b"700")
    assert cgroup_badness(fs, CgroupPath("/a")) == (700, "trusted")


def test_user_value_ignored_when_parent_has_another_owner(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/deleg")
    d = fake_v1.cgroup("/deleg/inner")
    top = fake_v1.cgroot / "deleg"
    os.chown(top, 65534, 65534)
    os.chown(d, 65534, 65534)
    os.setxattr(top, "user.memcgctl.badness", b"999")
    os.setxattr(d, "user.memcgctl.badness", b"5")
    fs = fake_v1.env().fs
    assert cgroup_badness(fs, CgroupPath("/deleg")) == (None, "default")  # its parent is root's
    assert cgroup_badness(fs, CgroupPath("/deleg/inner")) == (5, "user")


@pytest.mark.parametrize("raw", [b"abc", b"-1", b"1001", b""])
def test_malformed_values_are_ignored(fake_v1: FakeHost, raw: bytes) -> None:
    d = fake_v1.cgroup("/a")
    os.setxattr(d, "trusted.memcgctl.badness", raw)
    assert cgroup_badness(fake_v1.env().fs, CgroupPath("/a")) == (None, "default")


def test_write_and_clear(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/a")
    fs = fake_v1.env().fs
    write_setting(fs, CgroupPath("/a"), BADNESS, 42, "trusted")
    assert os.getxattr(fake_v1.cgroot / "a", "trusted.memcgctl.badness") == b"42"
    write_setting(fs, CgroupPath("/a"), BADNESS, None, "trusted")
    write_setting(fs, CgroupPath("/a"), BADNESS, None, "trusted")  # clearing twice is fine
    assert cgroup_badness(fs, CgroupPath("/a")) == (None, "default")


def _alive(pid: int, start: int) -> bool:
    return True


def test_registry_keys_on_start_time_and_boot(tmp_path: Path) -> None:
    reg = ProcessRegistry(tmp_path, "boot-1")
    reg.update({(100, 5000): 10}, _alive)
    assert reg.load() == {(100, 5000): 10}
    # same pid, other start time: a recycled pid does not match
    assert reg.load().get((100, 6000)) is None
    # another boot: nothing applies
    assert ProcessRegistry(tmp_path, "boot-2").load() == {}


def test_registry_prunes_dead_entries(tmp_path: Path) -> None:
    reg = ProcessRegistry(tmp_path, "b")
    reg.update({(1, 1): 1, (2, 2): 2}, _alive)
    reg.update({(3, 3): 3}, lambda pid, start: pid != 1)
    assert reg.load() == {(2, 2): 2, (3, 3): 3}


def test_registry_survives_garbage(tmp_path: Path) -> None:
    reg = ProcessRegistry(tmp_path, "b", clock=lambda: 77)
    (tmp_path / "badness.json").write_text("{not json")
    assert reg.load() == {}
    reg.update({(1, 1): 1}, _alive)
    assert json.loads((tmp_path / "badness.json").read_text())["processes"] == [
        {"pid": 1, "start_time": 1, "badness": 1, "set_at": 77}
    ]


def _writer(state: str, base: int) -> None:
    reg = ProcessRegistry(Path(state), "b")
    for i in range(40):
        reg.update({(base + i, 1): i % 1000}, _alive)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), base)) for base in (1000, 2000, 3000)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    entries = ProcessRegistry(tmp_path, "b").load()
    assert len(entries) == 120
