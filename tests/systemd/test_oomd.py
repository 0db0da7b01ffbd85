"""The daemon beside systemd-oomd (issue 26, docs/systemd.md): one killer per episode.

systemd-oomd (Debian's package ``systemd-oomd``, same version as systemd) runs with a
2 s ``DefaultMemoryPressureDurationSec=``; ``sdoomd.slice`` has ``MemoryMax=128M``,
``ManagedOOMMemoryPressure=kill`` and ``ManagedOOMMemoryPressureLimit=2%``.  With the
daemon managing the slice, its candidates carry ``user.oomd_omit=1`` and one pressure
episode (held open 6 s, three times oomd's duration) ends with the policy's victim
killed by the daemon and no kill by oomd.  Then, the daemon stopped (its marks released),
the same slice under pressure is oomd's: it kills there, which shows its thresholds do
trigger in this guest.  Runs after test_daemon_unit.py (file order), whose daemon is
stopped by then.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.test_daemon_unit import (
    CG,
    HELPERS,
    MIB,
    REPO,
    UNIT,
    events,
    grow_argv,
    installed_daemon,
    killed_by_daemon,
    main_pid,
    mark,
    memcgctl,
    messages,
    read,
    run,
    show,
    valve,
    wait_for,
)

OSLICE = "sdoomd.slice"
OSLICE_CG = CG / OSLICE
OMIT = "user.oomd_omit"
OOMD = "systemd-oomd.service"
CONF = Path("/etc/systemd/oomd.conf.d/50-sdtest.conf")
OUT = REPO / ".cache" / "systemd"


def xattr(cg: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(cg, name)
    except OSError:
        return None


def oomd_lines() -> list[str]:
    return messages(OOMD)


def oomd_kills() -> list[str]:
    return [m for m in oomd_lines() if m.startswith("Killed ")]


def save(name: str, lines: list[str]) -> None:
    """What oomd said, kept for the report (the cwd is shared with the host)."""
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def oomd() -> Iterator[str]:
    """systemd-oomd started (the harness masks its socket with everything sockets.target
    pulls in), D-Bus too so that ``oomctl`` can ask it."""
    if not Path("/lib/systemd/systemd-oomd").exists():
        pytest.fail("no /lib/systemd/systemd-oomd: apt-get install systemd-oomd (.ci/run does)")
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text("[OOM]\nDefaultMemoryPressureDurationSec=2s\n")
    run("systemctl", "unmask", "systemd-oomd.socket", "dbus.socket", "dbus.service", check=False)
    run("systemctl", "start", "dbus.socket", check=False)
    run("systemctl", "start", OOMD)
    wait_for("systemd-oomd active", lambda: show(OOMD, "ActiveState")["ActiveState"] == "active")
    try:
        yield OOMD
    finally:
        save("oomd-journal.txt", oomd_lines())
        run("systemctl", "stop", OOMD, "systemd-oomd.socket", check=False)
        CONF.unlink(missing_ok=True)


@pytest.fixture(scope="module")
def oslice(oomd: str) -> Iterator[Path]:
    unit = Path("/run/systemd/system") / OSLICE
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(
        "[Slice]\nMemoryMax=128M\nManagedOOMMemoryPressure=kill\nManagedOOMMemoryPressureLimit=2%\n"
    )
    run("systemctl", "daemon-reload")
    run("systemctl", "start", OSLICE)
    try:
        props = show(OSLICE, "ManagedOOMMemoryPressure", "ManagedOOMMemoryPressureLimit")
        assert props["ManagedOOMMemoryPressure"] == "kill", props

        def monitored() -> bool:
            out = run("oomctl", "dump", check=False)
            return f"Path: /{OSLICE}" in out

        wait_for("oomctl dump to list the slice", monitored)
        save("oomctl-dump.txt", run("oomctl", "dump", check=False).splitlines())
        yield OSLICE_CG
    finally:
        run("systemctl", "stop", OSLICE, check=False)
        unit.unlink(missing_ok=True)
        run("systemctl", "daemon-reload", check=False)


@pytest.fixture(scope="module")
def odaemon(oslice: Path) -> Iterator[str]:
    with installed_daemon() as unit:
        yield unit


def start(name: str, *argv: str) -> Path:
    run("systemd-run", f"--unit={name}", f"--slice={OSLICE}", "--collect", *argv)
    return OSLICE_CG / f"{name}.service"


def test_with_the_daemon_one_episode_has_one_killer(odaemon: str, oslice: Path) -> None:
    """A holder (40 MiB, badness 100: the policy's victim) and a grower (to 90 MiB) in
    the slice, the episode held open 6 s (``set-delay``).  The daemon omitted both from
    oomd; it kills the holder; oomd, whose 2 s at 2 % pass inside that episode, kills
    nothing."""
    p = memcgctl("set-delay", f"/{OSLICE}", "6s")
    assert p.returncode == 0, p.stderr
    go = Path("/run/sdoomd-go")
    go.unlink(missing_ok=True)
    try:
        hold = start("sdoomd-hold", sys.executable, str(HELPERS / "hog.py"), "40")
        wait_for("the holder's 40 MiB", lambda: int(read(hold, "memory.current")) > 40 * MIB)
        os.setxattr(hold, "trusted.memcgctl.badness", b"100")
        script = f"while [ ! -e {go} ]; do sleep 0.1; done; exec {' '.join(grow_argv(90, 0.005))}"
        grow = start("sdoomd-grow", "/bin/sh", "-c", script)
        # the valve, and both candidates taken out of oomd's hands under the daemon's mark
        wait_for(
            "the valve", lambda: read(oslice, "memory.high") == str(valve(128 * MIB)), timeout=30
        )
        wait_for("omit on both", lambda: xattr(hold, OMIT) == xattr(grow, OMIT) == b"1")
        for cg in (hold, grow):
            m = mark(cg)
            assert m is not None and m.get(OMIT) == "", m
        hold_pid, grow_pid = main_pid("sdoomd-hold.service"), main_pid("sdoomd-grow.service")
        before, kills_before = events(oslice), len(oomd_kills())
        go.touch()
        wait_for("the holder's death", lambda: not Path(f"/proc/{hold_pid}").exists(), timeout=120)
        assert killed_by_daemon(hold_pid), "\n".join(messages(odaemon)[-30:])
        wait_for("the grower at 90 MiB", lambda: int(read(grow, "memory.current")) > 85 * MIB)
        assert Path(f"/proc/{grow_pid}").exists()
        assert events(oslice)["oom_kill"] == before["oom_kill"]
        # oomd: the slice was over its limit (pressure), yet it killed nothing
        pressure = read(oslice, "memory.pressure")
        save("episode-pressure.txt", [pressure, *oomd_lines()])
        assert len(oomd_kills()) == kills_before, oomd_kills()
    finally:
        go.unlink(missing_ok=True)
        run("systemctl", "stop", "sdoomd-hold", "sdoomd-grow", check=False)


def test_the_daemons_episode_did_reach_oomds_threshold() -> None:
    """The episode above was one oomd acted on: its pressure passed 2 % for 2 s with
    reclaim activity, and oomd went looking for a victim below the slice
    (``oomd_kill_by_pgscan_rate`` logs the candidates it considered): it found none,
    every candidate being omitted."""
    lines = (OUT / "episode-pressure.txt").read_text().splitlines()
    full = re.search(r"full avg10=([0-9.]+)", lines[1])
    assert full is not None and float(full.group(1)) > 2.0, lines[:2]
    assert "Considered 0 cgroups for killing, top candidates were:" in lines, lines
    assert not any(ln.startswith("Killed ") for ln in lines), lines


def test_released_the_slice_is_oomds_and_it_kills_there(odaemon: str, oslice: Path) -> None:
    """The daemon stopped: no omit and no mark left.  Pressure in the slice
    (MemoryHigh=64M, a grower to 100 MiB: throttled, no OOM) and oomd kills a candidate
    — its thresholds trigger in this guest."""
    run("systemctl", "stop", UNIT)
    run("systemctl", "set-property", "--runtime", OSLICE, "MemoryHigh=64M")
    try:
        hold = start("sdoomd-hold2", sys.executable, str(HELPERS / "hog.py"), "8")
        wait_for("the small holder", lambda: int(read(hold, "memory.current")) > 8 * MIB)
        assert xattr(hold, OMIT) is None and mark(hold) is None
        assert mark(oslice) is None and read(oslice, "memory.high") == str(64 * MIB)
        before = len(oomd_kills())
        grow = start("sdoomd-grow2", *grow_argv(100, 0.005))
        assert xattr(grow, OMIT) is None
        pids = {
            "hold2": main_pid("sdoomd-hold2.service"),
            "grow2": main_pid("sdoomd-grow2.service"),
        }
        wait_for("a kill by oomd", lambda: len(oomd_kills()) > before, timeout=180)
        kill = oomd_kills()[before]
        assert f"due to memory pressure for /{OSLICE}" in kill, kill
        which = re.search(rf"Killed /{OSLICE}/sdoomd-(hold2|grow2)\.service ", kill)
        assert which is not None, kill
        wait_for("oomd's victim gone", lambda: not Path(f"/proc/{pids[which.group(1)]}").exists())
        save("oomd-alone.txt", oomd_lines())
    finally:
        run("systemctl", "stop", "sdoomd-hold2", "sdoomd-grow2", check=False)
        run("systemctl", "set-property", "--runtime", OSLICE, "MemoryHigh=infinity", check=False)
        run("systemctl", "start", UNIT, check=False)


def test_oomctl_saw_the_slice(oslice: Path) -> None:
    out = subprocess.run(["oomctl", "dump"], capture_output=True, text=True, check=False).stdout
    assert f"Path: /{OSLICE}" in out
    assert "Memory Pressure Limit: 2.00%" in out, out
