"""The daemon's real ports on a cgroup v2 fixture tree: the valve's marks, adoption of
a dead instance's valve, and release (what no guest kernel is needed to show)."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from memcgctl.actions.kill import make_killer
from memcgctl.daemon import owner
from memcgctl.daemon.ports import RealPorts
from memcgctl.daemon.protocol import Mode
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import CgroupPath
from tests.fakehost import FakeHost

MIB = 1 << 20
LIMIT = 256 * MIB
VALVE = (LIMIT - int(LIMIT * 0.10)) // 4096 * 4096


def ports(host: FakeHost, tmp_path: Path, instance: str) -> RealPorts:
    env = host.env()
    return RealPorts(
        env,
        make_killer(env.proc_root, env.fs, env.proc),
        Journal(tmp_path / "state"),
        instance=instance,
        log=io.StringIO(),
    )


def test_a_dead_instances_valve_is_adopted_with_the_users_value(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    """A daemon SIGKILLed with the valve in place (memory.high = its valve) and no
    guardian: the next daemon must keep the *user's* value (in the mark) to restore,
    not take the dead valve for the user's."""
    d = fake_v2.cgroup("/jobs", limit=LIMIT, delay_ms=0)
    (d / "memory.high").write_text(f"{VALVE}\n")
    dead = {"instance": "no-such-boot/1/1", "memory.high": str(250 * MIB), "valve": str(VALVE)}
    os.setxattr(d, owner.MARK, json.dumps(dead).encode())
    p = ports(fake_v2, tmp_path, "this-boot/2/2")
    m = p.take_over(CgroupPath("/jobs"))
    assert m is not None and (m.mode, m.domain) == (Mode.VALVE, "/jobs")
    mark = json.loads(os.getxattr(d, owner.MARK))
    assert mark == {
        "instance": "this-boot/2/2",
        "memory.high": str(250 * MIB),
        "valve": str(VALVE),
        "user.oomd_omit": "",  # a leaf domain is systemd-oomd's candidate (daemon/oomd.py)
    }
    p.release(CgroupPath("/jobs"))
    assert (d / "memory.high").read_text().strip() == str(250 * MIB)
    assert owner.MARK not in os.listxattr(d)


def test_a_live_instances_valve_is_not_taken(fake_v2: FakeHost, tmp_path: Path) -> None:
    d = fake_v2.cgroup("/jobs", limit=LIMIT, delay_ms=0)
    (d / "memory.high").write_text("max\n")
    fake_v2.process(4242, "/", comm="memcgctl")  # the other daemon, alive
    env = fake_v2.env()
    live = {"instance": owner.instance_id(env.proc, 4242), "memory.high": "max"}
    os.setxattr(d, owner.MARK, json.dumps(live).encode())
    p = ports(fake_v2, tmp_path, "this-boot/2/2")
    assert p.take_over(CgroupPath("/jobs")) is None
    log = p.log
    assert isinstance(log, io.StringIO) and "held by the running daemon" in log.getvalue()
    assert (d / "memory.high").read_text().strip() == "max"


def test_a_rescan_of_a_big_tree_pulses_so_a_long_walk_is_no_hang(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    """The guardian takes a heartbeat older than 2.5 s for a hung daemon: a rescan walking
    thousands of cgroups (slow under emulation) beats on the way, once per PULSE_EVERY."""
    from memcgctl.daemon.ports import PULSE_EVERY

    for i in range(3 * PULSE_EVERY):
        fake_v2.cgroup(f"/pods/p{i}")
    fake_v2.cgroup("/pods/p7/job", limit=LIMIT, delay_ms=0)
    p = ports(fake_v2, tmp_path, "this-boot/2/2")
    beats: list[int] = []
    p.pulse = lambda: beats.append(1)
    assert p.managed() == {CgroupPath("/pods/p7/job"): 0}
    walked = 3 * PULSE_EVERY + 3  # the root, /pods, the pods and the job
    assert len(beats) == walked // PULSE_EVERY
