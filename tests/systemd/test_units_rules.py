"""``memcgctl run`` jobs in ``systemd-run --scope`` scopes, and a unit's rules across
``systemctl restart`` (issue 26, with issue 23's rules), under systemd as PID 1.

The daemon is installed as users do (``install-unit``) and reads
``/etc/memcgctl/rules.d`` (the guest's overlay: nothing reaches the host).  The kernel
is the oracle: the policy's victim died, ``oom_kill`` did not move.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.systemd.test_daemon_unit import (
    CG,
    HELPERS,
    MIB,
    events,
    grow_argv,
    installed_daemon,
    killed_by_daemon,
    main_pid,
    memcgctl,
    messages,
    read,
    run,
    show,
    valve,
    valves,
    wait_for,
)

RULES = Path("/etc/memcgctl/rules.d")
RSLICE = "sdrule.slice"
RSLICE_CG = CG / RSLICE
VICTIM = "sdrule-victim.service"
BADNESS = "trusted.memcgctl.badness"
DELAY = "trusted.memcgctl.oom_delay_ms"


def dead(pid: int) -> bool:
    """Exited: gone, or a zombie (the scope's shell exec'd the grower, which never reaps
    the job it started in the background)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def xattr(cg: Path, name: str) -> bytes | None:
    try:
        return os.getxattr(cg, name)
    except OSError:
        return None


@pytest.fixture(scope="module")
def rdaemon() -> Iterator[str]:
    RULES.mkdir(parents=True, exist_ok=True, mode=0o755)
    rules = RULES / "50-sdtest.toml"
    rules.write_text(
        "[[rule]]\n"
        'name = "sdtest-slice"\n'
        f'cgroup = "/{RSLICE}"\n'
        'oom_delay = "0"\n'
        "\n[[rule]]\n"
        'name = "sdtest-victim"\n'
        f'unit = "{VICTIM}"\n'
        "badness = 100\n"
        'oom_delay = "0"\n'
    )
    os.chmod(rules, 0o644)
    try:
        with installed_daemon() as unit:
            yield unit
    finally:
        rules.unlink(missing_ok=True)


def test_a_memcgctl_run_job_in_a_systemd_run_scope(rdaemon: str) -> None:
    """``systemd-run --scope -p MemoryMax=128M`` running ``memcgctl run -b 100 -- hog 30``
    (the policy's victim) and a grower with the default badness (to 80 MiB: it fits
    below the valve alone): the kernel would kill the grower (the biggest), the daemon
    kills the ``memcgctl run`` job."""
    go = Path("/run/sdrun-go")
    pidfile = Path("/run/sdrun-job.pid")
    go.unlink(missing_ok=True)
    pidfile.unlink(missing_ok=True)
    job = f"{sys.executable} -m memcgctl run -b 100 -- {sys.executable} {HELPERS / 'hog.py'} 30"
    script = (
        f"{job} & echo $! > {pidfile}; "
        f"while [ ! -e {go} ]; do sleep 0.1; done; exec {' '.join(grow_argv(80, 0.005))}"
    )
    scope = subprocess.Popen(
        ["systemd-run", "--scope", "--unit=sdrun", "-pMemoryMax=128M", "/bin/sh", "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parent = CG / "system.slice"
    before = events(parent)["oom_kill"]
    try:
        cg = parent / "sdrun.scope"
        wait_for("the scope's cgroup", cg.exists)
        os.setxattr(cg, DELAY, b"0")
        wait_for("the valve on the scope", lambda: read(cg, "memory.high") in valves(128 * MIB))
        wait_for("the job's pid", lambda: pidfile.exists() and pidfile.read_text().strip())
        job_pid = int(pidfile.read_text())
        wait_for("the job's 30 MiB", lambda: int(read(cg, "memory.current")) > 30 * MIB)
        # the job's badness, as memcgctl sees it (memcgctl run registered it; exec kept it)
        p = memcgctl("predict-victim", "/system.slice/sdrun.scope", "--json")
        assert p.returncode == 0, p.stderr
        victim = json.loads(p.stdout)["victim"]
        assert (victim["pid"], victim["badness"]) == (job_pid, 100), victim
        go.touch()
        wait_for("the job's death", lambda: dead(job_pid), timeout=120)
        assert killed_by_daemon(job_pid), "\n".join(messages(rdaemon)[-30:])
        wait_for("the grower at 80 MiB", lambda: int(read(cg, "memory.current")) > 78 * MIB)
        assert scope.poll() is None  # the grower, the scope's main process, lives on
        assert events(parent)["oom_kill"] == before
    finally:
        go.unlink(missing_ok=True)
        if scope.poll() is None:
            scope.send_signal(signal.SIGTERM)
            scope.wait(timeout=60)


@pytest.fixture
def rslice(rdaemon: str) -> Iterator[Path]:
    units = Path("/run/systemd/system")
    units.mkdir(parents=True, exist_ok=True)
    (units / RSLICE).write_text("[Slice]\nMemoryMax=128M\n")
    (units / VICTIM).write_text(
        "[Service]\n"
        f"Slice={RSLICE}\n"
        "MemoryMax=200M\n"
        f"ExecStart={sys.executable} {HELPERS / 'hog.py'} 40\n"
    )
    run("systemctl", "daemon-reload")
    run("systemctl", "start", RSLICE)
    try:
        yield RSLICE_CG
    finally:
        run("systemctl", "stop", VICTIM, "sdrule-grow", RSLICE, check=False)
        for name in (RSLICE, VICTIM):
            (units / name).unlink(missing_ok=True)
        run("systemctl", "daemon-reload", check=False)


def test_a_restarted_unit_gets_its_badness_and_delay_back(rdaemon: str, rslice: Path) -> None:
    """A service with a rule (badness 100, delay 0; its own MemoryMax=200M, so a valve
    of its own) in a slice with MemoryMax=128M.  ``systemctl restart`` makes its cgroup
    anew: the daemon writes the rule's values on the new one and takes it over again;
    the next OOM in the slice kills the restarted service's process (the kernel's pick
    would be the bigger grower)."""
    vcg = rslice / VICTIM
    run("systemctl", "start", VICTIM)
    wait_for("the rule on the service", lambda: xattr(vcg, BADNESS) == b"100")
    wait_for("the slice's delay", lambda: xattr(rslice, DELAY) == b"0")
    first = os.stat(vcg).st_ino
    run("systemctl", "restart", VICTIM)
    wait_for("a new cgroup", lambda: vcg.exists() and os.stat(vcg).st_ino != first)
    wait_for("the badness back", lambda: xattr(vcg, BADNESS) == b"100")
    wait_for("the delay back", lambda: xattr(vcg, DELAY) == b"0")
    wait_for("its valve back", lambda: read(vcg, "memory.high") in valves(200 * MIB))
    rule_marks = [k for k in os.listxattr(vcg) if k.endswith("_rule")]
    assert rule_marks, os.listxattr(vcg)
    victim = main_pid(VICTIM)
    wait_for("the victim's 40 MiB", lambda: int(read(vcg, "memory.current")) > 40 * MIB)
    before = events(rslice)["oom_kill"]
    run(
        "systemd-run",
        "--unit=sdrule-grow",
        f"--slice={RSLICE}",
        "--collect",
        *grow_argv(90, 0.005),
    )
    wait_for("the victim's death", lambda: not Path(f"/proc/{victim}").exists(), timeout=120)
    assert killed_by_daemon(victim), "\n".join(messages(rdaemon)[-30:])
    grow_cg = rslice / "sdrule-grow.service"
    wait_for("the grower at 90 MiB", lambda: int(read(grow_cg, "memory.current")) > 85 * MIB)
    assert events(rslice)["oom_kill"] == before
    # the journal names the rule that put the badness back
    p = memcgctl("events", f"/{RSLICE}", "--json")
    assert p.returncode == 0, p.stderr
    kinds = {e["kind"] for e in json.loads(p.stdout)["events"]}
    assert "user_kill" in kinds, kinds


MSLICE = "sdmid.slice"
MVICTIM = "sdmid-victim.service"
MGROW = "sdmid-grow"


@pytest.fixture
def mslice(rdaemon: str) -> Iterator[Path]:
    """A slice whose rule gives it a 5 s OOM delay (a rules file of its own, which the
    daemon picks up when it appears) and a service whose rule makes it badness 100."""
    rules = RULES / "60-sdmid.toml"
    rules.write_text(
        "[[rule]]\n"
        'name = "sdmid-slice"\n'
        f'cgroup = "/{MSLICE}"\n'
        'oom_delay = "5s"\n'
        "\n[[rule]]\n"
        'name = "sdmid-victim"\n'
        f'unit = "{MVICTIM}"\n'
        "badness = 100\n"
    )
    os.chmod(rules, 0o644)
    units = Path("/run/systemd/system")
    units.mkdir(parents=True, exist_ok=True)
    (units / MSLICE).write_text("[Slice]\nMemoryMax=128M\n")
    (units / MVICTIM).write_text(
        f"[Service]\nSlice={MSLICE}\nExecStart={sys.executable} {HELPERS / 'hog.py'} 40\n"
    )
    run("systemctl", "daemon-reload")
    run("systemctl", "start", MSLICE)
    try:
        yield CG / MSLICE
    finally:
        run("systemctl", "stop", MVICTIM, MGROW, MSLICE, check=False)
        for name in (MSLICE, MVICTIM):
            (units / name).unlink(missing_ok=True)
        rules.unlink(missing_ok=True)
        run("systemctl", "daemon-reload", check=False)


def test_a_unit_restarted_during_an_episode(rdaemon: str, mslice: Path) -> None:
    """The slice (MemoryMax=128M, delay 5 s) is in an episode (a 40 MiB service at
    badness 100 and a grower to 90 MiB) when ``systemctl restart`` removes the
    service's cgroup and makes it anew.  The daemon carries on: the new cgroup gets the
    rule's badness back, and at the deadline the daemon kills the restarted service's
    new process (the kernel's pick would be the bigger grower); the kernel's
    ``oom_kill`` does not move and the daemon says nothing went wrong."""
    vcg = mslice / MVICTIM
    wait_for("the slice's delay", lambda: xattr(mslice, DELAY) == b"5000", timeout=120)
    wait_for("the valve on the slice", lambda: read(mslice, "memory.high") == str(valve(128 * MIB)))
    run("systemctl", "start", MVICTIM)
    wait_for("the rule on the service", lambda: xattr(vcg, BADNESS) == b"100")
    old = main_pid(MVICTIM)
    wait_for("the service's 40 MiB", lambda: int(read(vcg, "memory.current")) > 40 * MIB)
    first = os.stat(vcg).st_ino
    before = events(mslice)["oom_kill"]
    since = len(messages(rdaemon))
    run("systemd-run", f"--unit={MGROW}", f"--slice={MSLICE}", "--collect", *grow_argv(90, 0.005))
    wait_for(
        "the episode",
        lambda: any(
            m.startswith("under_oom ") and f"cgroup=/{MSLICE}" in m
            for m in messages(rdaemon)[since:]
        ),
        timeout=120,
    )
    run("systemctl", "restart", MVICTIM)  # mid-episode: well inside the 5 s delay
    wait_for("a new cgroup", lambda: vcg.exists() and os.stat(vcg).st_ino != first)
    assert not killed_by_daemon(old), "the daemon acted before the restart"
    new = main_pid(MVICTIM)
    assert new not in (0, old)
    wait_for("the badness back", lambda: xattr(vcg, BADNESS) == b"100")
    wait_for("the new process's death", lambda: dead(new), timeout=120)
    assert killed_by_daemon(new), "\n".join(messages(rdaemon)[-30:])
    grow_cg = mslice / f"{MGROW}.service"
    wait_for("the grower at 90 MiB", lambda: int(read(grow_cg, "memory.current")) > 85 * MIB)
    assert events(mslice)["oom_kill"] == before
    said = messages(rdaemon)[since:]
    assert not [m for m in said if m.startswith("daemon_error")], said
    assert show(rdaemon, "ActiveState")["ActiveState"] == "active"
