"""The daemon as a systemd unit, beside systemd's own cgroup management (issue 26).

One guest boot for the module (systemd 252 as PID 1, cgroup v2).  The daemon is
installed the documented way (``memcgctl install-unit``, ``systemctl enable --now``)
and manages a slice whose ``MemoryMax=`` systemd set; jobs are systemd services and
scopes.  The kernel is the oracle: the policy's victim died, ``memory.events``
``oom_kill`` did not move, and systemd's view (``systemctl show``) and the cgroup files
end consistent.  The tests run in file order and share the daemon and the slice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
HELPERS = REPO / "tests" / "helpers"
CG = Path("/sys/fs/cgroup")
UNIT = "memcgctl-daemon"
SLICE = "sdtest.slice"
SLICE_CG = CG / SLICE
MARK = "trusted.memcgctl.daemon"
MIB = 1 << 20
PAGE = 4096
T = TypeVar("T")
KILLED: dict[str, int] = {}  # the daemon's victims, for the tests that read the logs


def valve(limit: int) -> int:
    """The daemon's default valve: 10 % of memory.max below it, in whole pages."""
    return (limit - int(limit * 0.10)) // PAGE * PAGE


def valves(limit: int) -> set[str]:
    """What memory.high may hold on a delay-0 domain the daemon took over: the valve,
    or its lower step one headroom below it (daemon/valve.py), where it sits while
    memory.current is well below that."""
    high = valve(limit)
    return {str(high), str((2 * high - limit) // PAGE * PAGE)}


def run(*argv: str, check: bool = True, timeout: float = 120) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO)
    if check and p.returncode != 0:
        raise AssertionError(f"{argv}: exit {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p.stdout


def memcgctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memcgctl", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
    )


def show(unit: str, *props: str) -> dict[str, str]:
    out = run("systemctl", "show", *(f"-p{p}" for p in props), unit)
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    """Poll until probe() returns something truthy; fail naming what never happened,
    with the daemon's log and the slice's state."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what} (last: {last!r})\n{diagnosis()}"
    )


def diagnosis() -> str:
    lines = [f"{UNIT}: {show(UNIT, 'ActiveState', 'MainPID', 'NRestarts')}"]
    lines += messages(f"{UNIT}.service")[-40:]
    for name in ("memory.max", "memory.high", "memory.current", "memory.events"):
        try:
            lines.append(f"{SLICE}/{name}: {read(SLICE_CG, name)!r}")
        except OSError as exc:
            lines.append(f"{SLICE}/{name}: {exc}")
    try:
        stat = dict(ln.split() for ln in read(SLICE_CG, "memory.stat").splitlines())
        keys = ("anon", "file", "kernel", "slab_reclaimable", "slab_unreclaimable")
        lines.append(f"{SLICE}/memory.stat: " + " ".join(f"{k}={stat.get(k)}" for k in keys))
    except OSError as exc:
        lines.append(f"{SLICE}/memory.stat: {exc}")
    for job in ("sdtest-low", "sdtest-grow", "sdtest-hold2", "sdtest-grow2"):
        lines.append(f"{job}: {show(job, 'ActiveState', 'Result', 'ExecMainStatus')}")
    return "\n".join(lines)


def read(cg: Path, name: str) -> str:
    return (cg / name).read_text().strip()


def events(cg: Path) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in read(cg, "memory.events").splitlines())}


def mark(cg: Path) -> dict[str, object] | None:
    try:
        return dict(json.loads(os.getxattr(cg, MARK)))
    except OSError:
        return None


def unit_cg(unit: str) -> Path:
    return CG / show(unit, "ControlGroup")["ControlGroup"].lstrip("/")


def journal(unit: str, *args: str) -> list[dict[str, str]]:
    out = run("journalctl", "-b", "-u", unit, "-o", "json", "--no-pager", *args, check=False)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def messages(unit: str, *args: str) -> list[str]:
    return [str(e.get("MESSAGE", "")) for e in journal(unit, *args)]


def main_pid(unit: str) -> int:
    return int(show(unit, "MainPID")["MainPID"])


def daemon_holds_valve(limit: int) -> Callable[[], bool]:
    """memory.high is the valve and marked by the running daemon's instance."""

    def probe() -> bool:
        m = mark(SLICE_CG)
        pid = main_pid(f"{UNIT}.service")
        return (
            read(SLICE_CG, "memory.high") in valves(limit)
            and m is not None
            and f"/{pid}/" in str(m.get("instance"))
        )

    return probe


def killed_by_daemon(pid: int) -> bool:
    """The daemon's journal has its daemon_kill of pid (a transient unit's own exit
    status is gone with the unit: --collect)."""
    return any(
        m.startswith("daemon_kill ") and f" pid={pid} " in f"{m} "
        for m in messages(f"{UNIT}.service")
    )


def start_job(name: str, *argv: str, props: tuple[str, ...] = ()) -> None:
    """A transient service in the test slice."""
    run(
        "systemd-run",
        f"--unit={name}",
        f"--slice={SLICE}",
        "--collect",
        *(f"-p{p}" for p in props),
        *argv,
    )


def grow_argv(upto_mib: int, pause: float) -> tuple[str, ...]:
    return (sys.executable, str(HELPERS / "grow.py"), "1024", str(upto_mib), str(pause))


# ---------------------------------------------------------------- fixtures


@contextlib.contextmanager
def installed_daemon() -> Iterator[str]:
    """The daemon's unit, installed and started as README says; stopped and disabled
    after (every module of the suite runs it this way)."""
    p = memcgctl("install-unit", "--", "--rescan", "500ms")
    assert p.returncode == 0, p.stderr
    assert f"systemctl enable --now {UNIT}" in p.stdout
    run("systemctl", "enable", "--now", UNIT)
    wait_for("the daemon active", lambda: show(UNIT, "ActiveState")["ActiveState"] == "active")
    try:
        yield f"{UNIT}.service"
    finally:
        run("systemctl", "disable", "--now", UNIT, check=False)


@pytest.fixture(scope="module")
def daemon() -> Iterator[str]:
    with installed_daemon() as unit:
        yield unit


@pytest.fixture(scope="module")
def managed_slice(daemon: str) -> Iterator[Path]:
    """sdtest.slice: MemoryMax=128M from its unit file, OOM delay 0 (set-delay)."""
    unit = Path("/run/systemd/system") / SLICE
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text("[Slice]\nMemoryMax=128M\n")
    run("systemctl", "daemon-reload")
    run("systemctl", "start", SLICE)
    try:
        assert read(SLICE_CG, "memory.max") == str(128 * MIB)
        p = memcgctl("set-delay", f"/{SLICE}", "0")
        assert p.returncode == 0, p.stderr
        yield SLICE_CG
    finally:
        run("systemctl", "stop", SLICE, check=False)
        unit.unlink(missing_ok=True)
        run("systemctl", "daemon-reload", check=False)


# ---------------------------------------------------------------- the unit


def _ppid(proc_dir: Path) -> int:
    try:
        return int((proc_dir / "stat").read_bytes().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def test_the_installed_unit_is_started_by_systemd(daemon: str) -> None:
    text = Path(f"/etc/systemd/system/{daemon}").read_text()
    assert f"ExecStart={sys.executable} -m memcgctl daemon --guardian=systemd" in text
    props = show(daemon, "Type", "NotifyAccess", "WatchdogUSec", "UnitFileState", "ExecStopPost")
    assert props["UnitFileState"] == "enabled"
    assert "--release" in props["ExecStopPost"]
    # READY=1 made it active (daemon/sdnotify.py); the watchdog is armed
    assert (props["Type"], props["NotifyAccess"]) == ("notify", "main")
    assert props["WatchdogUSec"] != "0"
    pid = main_pid(daemon)
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"daemon" in cmdline and b"--guardian=systemd" in cmdline
    # systemd's watchdog was really set up, so the daemon started no guardian process
    children = [
        d.name
        for d in Path("/proc").iterdir()
        if d.name.isdigit() and _ppid(d) == pid and b"guard" in (d / "cmdline").read_bytes()
    ]
    assert children == []
    # it is the daemon that started, and said so in the journal
    wait_for(
        "daemon_started in the journal",
        lambda: any(m.startswith("daemon_started ") for m in messages(daemon)),
    )


def test_the_valve_sits_on_the_slice_systemd_limits(managed_slice: Path) -> None:
    wait_for("the valve on the slice", daemon_holds_valve(128 * MIB))
    # the user's memory.high, marked for release, is systemd's MemoryHigh= (infinity)
    assert show(SLICE, "MemoryHigh")["MemoryHigh"] == "infinity"
    m = mark(managed_slice)
    assert m is not None and m["memory.high"] == "max"


# ---------------------------------------------------------------- an OOM in a unit


def test_a_units_oom_kills_the_policys_victim_not_the_kernels(managed_slice: Path) -> None:
    """A holder service (40 MiB, badness 100) and a grower service (default badness,
    90 MiB) in the slice: together over MemoryMax=128M.  The kernel would kill the
    grower (the biggest); the policy kills the holder, and the grower lives on."""
    wait_for("the valve on the slice", daemon_holds_valve(128 * MIB))
    try:
        start_job("sdtest-low", sys.executable, str(HELPERS / "hog.py"), "40")
        low_cg = SLICE_CG / "sdtest-low.service"
        wait_for("the holder's 40 MiB", lambda: int(read(low_cg, "memory.current")) > 40 * MIB)
        os.setxattr(low_cg, "trusted.memcgctl.badness", b"100")
        low_pid = main_pid("sdtest-low.service")
        before = events(SLICE_CG)["oom_kill"]
        start_job("sdtest-grow", *grow_argv(90, 0.005))
        wait_for("the holder's death", lambda: not Path(f"/proc/{low_pid}").exists(), timeout=120)
        assert killed_by_daemon(low_pid), diagnosis()
        # the grower, the kernel's pick, lives on (90 MiB fits below the valve alone)
        grow_cg = SLICE_CG / "sdtest-grow.service"
        wait_for("the grower at 90 MiB", lambda: int(read(grow_cg, "memory.current")) > 85 * MIB)
        assert show("sdtest-grow.service", "ActiveState")["ActiveState"] == "active"
        assert events(SLICE_CG)["oom_kill"] == before == 0, diagnosis()
        # systemd's view and the files agree after the episode
        assert read(SLICE_CG, "memory.max") == show(SLICE, "MemoryMax")["MemoryMax"]
        assert read(SLICE_CG, "memory.high") in valves(128 * MIB)
        assert read(SLICE_CG, "cgroup.freeze") == "0"
    finally:
        run("systemctl", "stop", "sdtest-low", "sdtest-grow", check=False)


# ---------------------------------------------------------------- systemd writes the valve


def _high_is(value: str | set[str]) -> Callable[[], bool]:
    """memory.high is value (or one of them: a delay-0 valve's two steps)."""
    values = {value} if isinstance(value, str) else value
    return lambda: read(SLICE_CG, "memory.high") in values


def _stays(what: str, probe: Callable[[], bool], seconds: float = 1.5) -> None:
    """probe() holds now and still after the daemon's rescan interval, a few times."""
    wait_for(what, probe)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert probe(), what
        time.sleep(0.25)


def test_set_property_and_daemon_reload_are_the_users_values(managed_slice: Path) -> None:
    v128, v160 = valves(128 * MIB), valves(160 * MIB)
    # MemoryHigh= lower than the valve: systemd's value is the user's, and it stays
    run("systemctl", "set-property", "--runtime", SLICE, "MemoryHigh=100M")
    _stays("memory.high = systemd's 100M", _high_is(str(100 * MIB)))
    assert show(SLICE, "MemoryHigh")["MemoryHigh"] == str(100 * MIB)
    wait_for(
        "the mark to hold 100M", lambda: (mark(SLICE_CG) or {}).get("memory.high") == str(100 * MIB)
    )
    # MemoryHigh=infinity: systemd writes max; the daemon puts its valve back
    run("systemctl", "set-property", "--runtime", SLICE, "MemoryHigh=infinity")
    _stays("the valve back after MemoryHigh=infinity", _high_is(v128))
    assert (mark(SLICE_CG) or {}).get("memory.high") == "max"
    # MemoryMax= raised: systemd rewrites memory.max and memory.high; the valve follows
    run("systemctl", "set-property", "--runtime", SLICE, "MemoryMax=160M")
    _stays("the valve moved to 160M's", _high_is(v160))
    assert read(SLICE_CG, "memory.max") == show(SLICE, "MemoryMax")["MemoryMax"] == str(160 * MIB)
    # daemon-reload re-applies the units' settings: the valve survives it
    run("systemctl", "daemon-reload")
    _stays("the valve after daemon-reload", _high_is(v160))
    run("systemctl", "set-property", "--runtime", SLICE, "MemoryMax=128M")
    _stays("the valve back at 128M's", _high_is(v128))
    assert "valve_moved" in " ".join(messages(f"{UNIT}.service"))


def test_set_property_during_an_episode_the_policy_still_wins(managed_slice: Path) -> None:
    """An episode held open by a 3 s delay; systemd rewrites memory.high (MemoryHigh=
    infinity) in the middle.  The daemon re-installs the valve and kills the policy's
    victim (the grower, badness 100), not the kernel's pick (the bigger holder, 70 MiB);
    no kernel kill."""
    os.setxattr(SLICE_CG, "trusted.memcgctl.oom_delay_ms", b"3000")
    go = Path("/run/sdtest-go")
    go.unlink(missing_ok=True)
    try:
        start_job("sdtest-hold2", sys.executable, str(HELPERS / "hog.py"), "70")
        hold_cg = SLICE_CG / "sdtest-hold2.service"
        wait_for("the holder's 70 MiB", lambda: int(read(hold_cg, "memory.current")) > 70 * MIB)
        wait_for("the valve", daemon_holds_valve(128 * MIB))
        before = events(SLICE_CG)
        # the grower waits for its badness before growing
        script = f"while [ ! -e {go} ]; do sleep 0.1; done; exec {' '.join(grow_argv(60, 0.01))}"
        start_job("sdtest-grow2", "/bin/sh", "-c", script)
        os.setxattr(SLICE_CG / "sdtest-grow2.service", "trusted.memcgctl.badness", b"100")
        g2_pid = main_pid("sdtest-grow2.service")
        go.touch()
        wait_for("the valve's high event", lambda: events(SLICE_CG)["high"] > before["high"])
        run("systemctl", "set-property", "--runtime", SLICE, "MemoryHigh=infinity")
        wait_for("grow2's death", lambda: not Path(f"/proc/{g2_pid}").exists())
        assert killed_by_daemon(g2_pid), diagnosis()
        assert show("sdtest-hold2.service", "ActiveState")["ActiveState"] == "active"
        assert events(SLICE_CG)["oom_kill"] == before["oom_kill"], diagnosis()
        wait_for("the valve after the episode", _high_is(valves(128 * MIB)))
        assert show(SLICE, "MemoryHigh")["MemoryHigh"] == "infinity"
    finally:
        go.unlink(missing_ok=True)
        os.setxattr(SLICE_CG, "trusted.memcgctl.oom_delay_ms", b"0")
        run("systemctl", "stop", "sdtest-hold2", "sdtest-grow2", check=False)


def test_a_scope_from_systemd_run_is_handled_too(daemon: str) -> None:
    """``systemd-run --scope -p MemoryMax=64M``: its only process grows past the limit;
    the daemon (delay 0 on the scope) kills it before the kernel does."""
    go = Path("/run/sdtest-scope-go")
    go.unlink(missing_ok=True)
    script = f"while [ ! -e {go} ]; do sleep 0.1; done; exec {' '.join(grow_argv(200, 0.005))}"
    scope = subprocess.Popen(
        [
            "systemd-run",
            "--scope",
            "--unit=sdtest-scope",
            "-pMemoryMax=64M",
            "/bin/sh",
            "-c",
            script,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parent = CG / "system.slice"
    before = events(parent)["oom_kill"]  # hierarchical: the scope's kills count here
    try:
        cg = parent / "sdtest-scope.scope"
        wait_for("the scope's cgroup", cg.exists)
        os.setxattr(cg, "trusted.memcgctl.oom_delay_ms", b"0")
        wait_for("the valve on the scope", lambda: read(cg, "memory.high") in valves(64 * MIB))
        go.touch()
        assert scope.wait(timeout=120) == -signal.SIGKILL, diagnosis()
        KILLED["scope"] = scope.pid  # systemd-run --scope execs the command (sh execs too)
        kills = [
            m for m in messages(daemon) if m.startswith("daemon_kill ") and "sdtest-scope" in m
        ]
        assert kills, messages(daemon)
        assert events(parent)["oom_kill"] == before
    finally:
        go.unlink(missing_ok=True)
        if scope.poll() is None:
            scope.kill()
            scope.wait()


def test_journald_has_the_kill_at_warning_and_events_sees_it() -> None:
    """The scope test's kill, as journald and ``memcgctl events`` have it."""
    pid = KILLED.get("scope")
    assert pid is not None, "the scope test killed nobody"
    kills = [
        e
        for e in journal(f"{UNIT}.service", "-p", "warning")
        if str(e.get("MESSAGE", "")).startswith("daemon_kill ")
        and f" pid={pid} " in f"{e.get('MESSAGE')} "
    ]
    assert kills, messages(f"{UNIT}.service")
    assert kills[0]["PRIORITY"] == "4"  # <4> read by journald, stripped from the line
    assert not str(kills[0]["MESSAGE"]).startswith("<")
    # under_oom is a notice: not shown at -p warning, shown at -p notice
    assert not any(m.startswith("under_oom ") for m in messages(f"{UNIT}.service", "-p", "warning"))
    assert any(m.startswith("under_oom ") for m in messages(f"{UNIT}.service", "-p", "notice"))
    p = memcgctl("events", "/system.slice", "--json")
    assert p.returncode == 0, p.stderr
    found = [e for e in json.loads(p.stdout)["events"] if e.get("pid") == pid]
    assert {e["kind"] for e in found} >= {"user_kill"}, found


# ---------------------------------------------------------------- stop, restart, kill -9


def test_restart_and_kill_9_and_stop_leave_nothing_behind(daemon: str, managed_slice: Path) -> None:
    limit = 128 * MIB
    wait_for("the valve", daemon_holds_valve(limit))
    # restart: SIGTERM restores, the new instance installs its own valve
    old = main_pid(daemon)
    run("systemctl", "restart", daemon)
    wait_for("a new main pid", lambda: main_pid(daemon) not in (0, old))
    wait_for("the new instance's valve", daemon_holds_valve(limit))
    # kill -9 of the main pid: ExecStopPost= releases, Restart=always starts a new one
    old = main_pid(daemon)
    restarts = int(show(daemon, "NRestarts")["NRestarts"])
    os.kill(old, signal.SIGKILL)
    wait_for("the restart", lambda: int(show(daemon, "NRestarts")["NRestarts"]) > restarts)
    wait_for("a new main pid", lambda: main_pid(daemon) not in (0, old))
    # ExecStopPost= (daemon --release) put back what the dead instance held, before
    # the restart (systemd resets the ExecStopPost= status on the new start: the
    # journal has the release's line)
    log = "\n".join(messages(daemon))
    assert f"/{SLICE}: restored memory.high" in log, log
    wait_for("the new instance's valve", daemon_holds_valve(limit))
    # stop: nothing of the daemon's is left, and the files say what systemd says
    run("systemctl", "stop", daemon)
    assert show(daemon, "ActiveState")["ActiveState"] in ("inactive", "failed")
    assert read(SLICE_CG, "memory.high") == "max"
    assert show(SLICE, "MemoryHigh")["MemoryHigh"] == "infinity"
    assert read(SLICE_CG, "cgroup.freeze") == "0"
    assert mark(SLICE_CG) is None
    run("systemctl", "start", daemon)
