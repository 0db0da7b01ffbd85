"""Beside systemd-oomd (daemon/oomd.py): the daemon sets ``user.oomd_omit=1`` on oomd's
candidates inside a valve's domain, under its mark, and release puts back exactly what
was there.  On a cgroup v2 fixture tree; the real systemd-oomd beside the daemon is
tests/systemd/test_oomd.py (in the guest)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from memcgctl.daemon import oomd, owner
from memcgctl.daemon.ports import RealPorts
from memcgctl.vocab.cgpath import CgroupPath
from tests.fakehost import FakeHost
from tests.test_daemon_ports import ports as real_ports

MIB = 1 << 20
DEAD = "no-such-boot/1/1"


def ports(host: FakeHost, tmp_path: Path, instance: str = "this-boot/2/2") -> RealPorts:
    return real_ports(host, tmp_path, instance)


def omit(d: Path) -> bytes | None:
    try:
        return os.getxattr(d, oomd.OMIT)
    except OSError:
        return None


def mark(d: Path) -> dict[str, object] | None:
    try:
        return dict(json.loads(os.getxattr(d, owner.MARK)))
    except OSError:
        return None


def tree(host: FakeHost) -> dict[str, Path]:
    """/jobs (the limit) with leaves a, b/c, b/d and an OOM group g (its child x is
    not a candidate: oomd kills g as a whole)."""
    jobs = host.cgroup("/jobs", limit=128 * MIB, delay_ms=0)
    (jobs / "memory.high").write_text("max\n")
    return {
        "jobs": jobs,
        "a": host.cgroup("/jobs/a"),
        "b": host.cgroup("/jobs/b"),
        "c": host.cgroup("/jobs/b/c"),
        "d": host.cgroup("/jobs/b/d"),
        "g": host.cgroup("/jobs/g", oom_group=True),
        "x": host.cgroup("/jobs/g/x"),
    }


def test_candidates_are_oomds_leaves_and_oom_groups(fake_v2: FakeHost) -> None:
    t = tree(fake_v2)
    (t["g"] / "memory.oom.group").write_text("1\n")
    fs = fake_v2.env().fs
    got = oomd.candidates(fs, CgroupPath("/jobs"))
    assert sorted(map(str, got)) == ["/jobs/a", "/jobs/b/c", "/jobs/b/d", "/jobs/g"]
    # a leaf domain (a service with its own MemoryMax=) is its own candidate
    assert oomd.candidates(fs, CgroupPath("/jobs/a")) == [CgroupPath("/jobs/a")]


def test_take_over_omits_the_candidates_and_release_gives_them_back(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    t = tree(fake_v2)
    (t["g"] / "memory.oom.group").write_text("1\n")
    os.setxattr(t["d"], oomd.OMIT, b"1")  # systemd's ManagedOOMPreference=omit
    os.setxattr(t["c"], oomd.OMIT, b"0")  # someone's explicit 0
    p = ports(fake_v2, tmp_path)
    assert p.take_over(CgroupPath("/jobs")) is not None
    for name in ("a", "c", "g"):
        assert omit(t[name]) == b"1", name
        m = mark(t[name])
        assert m is not None and m["instance"] == "this-boot/2/2", name
    assert (mark(t["a"]) or {})[oomd.OMIT] == ""
    assert (mark(t["c"]) or {})[oomd.OMIT] == "0"
    assert mark(t["d"]) is None and omit(t["d"]) == b"1"  # not ours: untouched
    assert omit(t["x"]) is None and omit(t["b"]) is None  # not candidates
    assert omit(t["jobs"]) is None  # the domain has children: not a candidate
    # a unit started later below the valve: the next rescan omits it too
    e = fake_v2.cgroup("/jobs/e")
    p.managed()
    assert omit(e) == b"1"
    p.release(CgroupPath("/jobs"))
    assert omit(t["a"]) is None and omit(e) is None
    assert omit(t["c"]) == b"0"
    assert omit(t["d"]) == b"1"  # systemd's stays
    assert all(mark(t[n]) is None for n in ("a", "c", "g")) and mark(e) is None


def test_dry_run_writes_nothing(fake_v2: FakeHost, tmp_path: Path) -> None:
    t = tree(fake_v2)
    p = ports(fake_v2, tmp_path)
    p.dry_run = True
    assert p.take_over(CgroupPath("/jobs")) is not None
    assert omit(t["a"]) is None and mark(t["a"]) is None


def test_a_dead_instances_omit_is_released_or_adopted(fake_v2: FakeHost, tmp_path: Path) -> None:
    """``daemon --release`` (ExecStopPost) removes a dead instance's omit; a new daemon
    adopts it with the value the dead one recorded."""
    t = tree(fake_v2)
    for name in ("a", "c"):
        os.setxattr(t[name], oomd.OMIT, b"1")
        os.setxattr(t[name], owner.MARK, json.dumps({"instance": DEAD, oomd.OMIT: ""}).encode())
    env = fake_v2.env()
    done = owner.release(env.fs, env.proc, CgroupPath("/"), instance=None)
    assert (CgroupPath("/jobs/a"), [f"{oomd.OMIT}=(none)"]) in done
    assert omit(t["a"]) is None and mark(t["a"]) is None
    p = ports(fake_v2, tmp_path)
    assert p.take_over(CgroupPath("/jobs")) is not None
    assert omit(t["c"]) == b"1"
    assert mark(t["c"]) == {"instance": "this-boot/2/2", oomd.OMIT: ""}
    p.release(CgroupPath("/jobs"))
    assert omit(t["c"]) is None


def test_a_cgroup_root_does_not_own_is_left_alone(fake_v2: FakeHost, tmp_path: Path) -> None:
    """oomd reads user.oomd_* only on root-owned cgroups: a delegated one is skipped."""
    t = tree(fake_v2)
    os.chown(t["a"], 65534, 65534)
    p = ports(fake_v2, tmp_path)
    assert p.take_over(CgroupPath("/jobs")) is not None
    assert omit(t["a"]) is None and mark(t["a"]) is None
    assert omit(t["c"]) == b"1"


def test_releasing_an_outer_valve_keeps_a_nested_valves_marks(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    """/jobs and /jobs/b (own limit and delay) both hold valves: releasing /jobs gives
    its leaves back to oomd but leaves /jobs/b's valve and its leaves' omits alone."""
    t = tree(fake_v2)
    b = fake_v2.cgroup("/jobs/b", limit=64 * MIB, delay_ms=0)
    (b / "memory.high").write_text("max\n")
    p = ports(fake_v2, tmp_path)
    assert p.take_over(CgroupPath("/jobs")) is not None
    assert p.take_over(CgroupPath("/jobs/b")) is not None
    inner_high = (b / "memory.high").read_text().strip()
    assert inner_high != "max"
    p.release(CgroupPath("/jobs"))
    assert omit(t["a"]) is None and mark(t["a"]) is None
    assert omit(t["c"]) == b"1" and omit(t["d"]) == b"1"
    assert (b / "memory.high").read_text().strip() == inner_high
    assert (mark(b) or {}).get("valve") == inner_high
    p.release(CgroupPath("/jobs/b"))
    assert omit(t["c"]) is None and mark(t["c"]) is None and mark(b) is None
