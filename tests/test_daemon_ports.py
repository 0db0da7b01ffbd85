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
LOW = (2 * VALVE - LIMIT) // 4096 * 4096  # the valve's lower step (delay 0)


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
        "valve_low": str(LOW),
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


# the user's own memory.high, above the valve (as many digits as the valve's: the
# fixture's files are not truncated on a write)
USER = 250 * MIB


def test_the_walk_for_orphaned_marks_pulses(fake_v2: FakeHost, tmp_path: Path) -> None:
    """At start the daemon walks the whole tree for a dead instance's marks (issue 22:
    3.3 s over 5,000 cgroups in the emulated guest): it pulses on the way, so the
    loop serves the notifications meanwhile and the guardian sees no hang."""
    from memcgctl.daemon.owner import PULSE_EVERY

    for i in range(4 * PULSE_EVERY):
        fake_v2.cgroup(f"/pods/p{i}")
    d = fake_v2.path("/pods/p7")
    (d / "memory.high").write_text(f"{VALVE}\n")
    dead = {"instance": "no-such-boot/1/1", "memory.high": str(USER), "valve": str(VALVE)}
    os.setxattr(d, owner.MARK, json.dumps(dead).encode())
    p = ports(fake_v2, tmp_path, "this-boot/2/2")
    beats: list[int] = []
    p.pulse = lambda: beats.append(1)
    assert p.release_orphans() == [CgroupPath("/pods/p7")]
    assert high_of(d) == str(USER)
    walked = 4 * PULSE_EVERY + 2  # the root, /pods and the pods
    assert len(beats) == walked // PULSE_EVERY


def high_of(d: Path) -> str:
    return (d / "memory.high").read_text().strip()


def test_a_delay0_valve_steps_down_far_from_it_and_is_raised_at_its_event(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    """The lower step (daemon/valve.py): memory.high at the near line while
    memory.current is well below it; raised to the valve at the first look at or above
    it (the kernel's high event), with the reading near; lowered again only half a
    headroom below; released, the user's value is back."""
    d = fake_v2.cgroup("/jobs", limit=LIMIT, usage=100 * MIB, delay_ms=0)
    (d / "memory.high").write_text(f"{USER}\n")
    (d / "memory.stat").write_text("anon 0\nactive_file 0\ninactive_file 0\n")
    cg = CgroupPath("/jobs")
    p = ports(fake_v2, tmp_path, "this-boot/2/2")
    assert p.take_over(cg) is not None
    assert high_of(d) == str(VALVE)  # raised until the core asks for the step
    assert json.loads(os.getxattr(d, owner.MARK))["valve_low"] == str(LOW)
    p.arm_near(cg, True)
    assert not p.level(cg).near and high_of(d) == str(LOW)
    (d / "memory.current").write_text(f"{LOW + MIB}\n")
    assert p.level(cg).near and high_of(d) == str(VALVE)
    (d / "memory.current").write_text(f"{LOW - MIB}\n")
    p.level(cg)
    assert high_of(d) == str(VALVE)  # within the hysteresis: not throttled again
    (d / "memory.current").write_text(f"{100 * MIB}\n")
    p.level(cg)
    assert high_of(d) == str(LOW)
    log = p.log
    assert isinstance(log, io.StringIO)
    assert [ln.split()[0][3:] for ln in log.getvalue().splitlines() if "valve_" in ln] == [
        "valve_lowered",
        "valve_raised",
        "valve_lowered",
    ]
    p.release(cg)  # from the lower step
    assert high_of(d) == str(USER) and owner.MARK not in os.listxattr(d)


def at_the_lower_step(host: FakeHost, tmp_path: Path) -> tuple[Path, CgroupPath, RealPorts]:
    """A delay-0 memcg with the user's own memory.high, taken over and far from its
    valve: memory.high at the valve's lower step."""
    d = host.cgroup("/jobs", limit=LIMIT, usage=100 * MIB, delay_ms=0)
    (d / "memory.high").write_text(f"{USER}\n")
    cg = CgroupPath("/jobs")
    p = ports(host, tmp_path, "this-boot/2/2")
    assert p.take_over(cg) is not None
    p.arm_near(cg, True)
    p.level(cg)
    assert high_of(d) == str(LOW)
    return d, cg, p


def test_disarmed_the_valve_is_raised_at_once(fake_v2: FakeHost, tmp_path: Path) -> None:
    d, cg, p = at_the_lower_step(fake_v2, tmp_path)
    p.arm_near(cg, False)  # e.g. the delay became 1 s
    assert high_of(d) == str(VALVE)
    p.level(cg)
    assert high_of(d) == str(VALVE)


def test_the_users_memory_high_written_over_the_lower_step_is_theirs(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    """A memory.high the user writes while the valve is at its lower step is their own:
    the valve follows it (the lower of the two), and without a valve to write there is
    no step; release leaves the user's value."""
    d, cg, p = at_the_lower_step(fake_v2, tmp_path)
    (d / "memory.high").write_text(f"{150 * MIB}\n")
    p.level(cg)
    assert high_of(d) == str(150 * MIB)
    assert p.valves[cg].low is None and not p.valves[cg].lowered
    mark = json.loads(os.getxattr(d, owner.MARK))
    assert "valve" not in mark and "valve_low" not in mark
    p.release(cg)
    assert high_of(d) == str(150 * MIB)


def test_a_dead_instances_lower_step_is_restored_and_adopted(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    """A daemon killed with its valve at the lower step: ``--release`` (and the
    guardian, the same owner.release) puts the user's value back; a new daemon takes
    the step for ours, not for the user's."""
    dead = {"instance": "no-such-boot/1/1", "memory.high": str(USER), "valve": str(VALVE)}
    dead["valve_low"] = str(LOW)
    for name in ("released", "adopted"):
        d = fake_v2.cgroup(f"/{name}", limit=LIMIT, usage=100 * MIB, delay_ms=0)
        (d / "memory.high").write_text(f"{LOW}\n")
        os.setxattr(d, owner.MARK, json.dumps(dead).encode())
    env = fake_v2.env()
    done = owner.release(env.fs, env.proc, CgroupPath("/released"))
    assert done == [(CgroupPath("/released"), [f"memory.high={USER}"])]
    assert high_of(fake_v2.path("/released")) == str(USER)
    p = ports(fake_v2, tmp_path, "this-boot/2/2")
    cg = CgroupPath("/adopted")
    assert p.take_over(cg) is not None
    assert p.valves[cg].user_high == USER and high_of(fake_v2.path("/adopted")) == str(VALVE)
    p.release(cg)
    assert high_of(fake_v2.path("/adopted")) == str(USER)


def test_a_step_never_writes_over_a_users_memory_high_written_since_the_look(
    fake_v2: FakeHost, tmp_path: Path
) -> None:
    """The user's write lands between the daemon's look and its step (seen in the v2
    guest: systemd's MemoryHigh= lost under the lower step): the step leaves it, and
    the next look takes it as the user's own value."""
    d, cg, p = at_the_lower_step(fake_v2, tmp_path)
    (d / "memory.high").write_text(f"{64 * MIB}\n")
    v = p.knobs.step(p.valves[cg], False)
    assert high_of(d) == str(64 * MIB) and v.lowered
    p.level(cg)
    assert high_of(d) == str(64 * MIB) and p.valves[cg].user_high == 64 * MIB
    p.release(cg)
    assert high_of(d) == str(64 * MIB)
