"""Issue 21 on cgroup v2, in the guest kernel: a delegated user (``nobody``, owning a
real delegated subtree) cannot turn the daemon against a cgroup it does not own
(item 2), and ``set-limit`` lowers ``memory.max`` below the usage by policy instead of
the kernel's kill inside the write (item 13)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.realkernel import HELPERS, TestCgroups, journaled, readable_helpers
from tests.test_daemon_kernel import MARK, Daemon, daemons, run_cli, set_xattr
from tests.v2.test_oom_v2 import events_file

__all__ = ["daemons"]
MIB = 1 << 20
NOBODY = 65534
SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody

# nobody's part: its own cgroups below its delegation, ranked and delayed through user.*
_AS_NOBODY = (
    "import os, sys\n"
    "deleg = sys.argv[1]\n"
    "with open(os.path.join(deleg, 'cgroup.subtree_control'), 'w') as f:\n"
    "    f.write('+memory')\n"
    "for spec in sys.argv[2:]:\n"
    "    rel, key, value = spec.split(':')\n"
    "    d = os.path.join(deleg, rel)\n"
    "    os.makedirs(d, exist_ok=True)\n"
    "    os.setxattr(d, 'user.memcgctl.' + key, value.encode())\n"
)


def delegate(tc: TestCgroups, cg: str) -> Path:
    """cgroup v2 delegation to nobody: the directory, cgroup.procs, cgroup.threads and
    cgroup.subtree_control (Documentation/admin-guide/cgroup-v2.rst, Delegation)."""
    d = tc.path(cg)
    for f in (d, *(d / n for n in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"))):
        os.chown(f, NOBODY, NOBODY)
    return d


def nobody_ranks(tc: TestCgroups, deleg: str, *specs: str) -> None:
    d = tc.path(deleg)
    r = subprocess.run(
        [*SETPRIV, SYSTEM_PYTHON, "-c", _AS_NOBODY, str(d), *specs],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    for spec in specs:
        path = d / spec.split(":")[0]
        if path not in tc.dirs:
            tc.dirs.append(path)
        assert os.stat(path).st_uid == NOBODY


def as_nobody(tc: TestCgroups, cg: str, *argv: str) -> subprocess.Popen[bytes]:
    """A process of nobody's in its cgroup (root places it there, as a session manager
    does: v2 needs write access to the common ancestor's cgroup.procs to move it)."""
    return tc.spawn(cg, [*SETPRIV, SYSTEM_PYTHON, *argv])


def state(tc: TestCgroups, cg: str) -> tuple[str, str, str]:
    d = tc.path(cg)
    frozen = [
        ln for ln in (d / "cgroup.events").read_text().splitlines() if ln.startswith("frozen")
    ]
    return (
        (d / "memory.high").read_text().strip(),
        (d / "cgroup.freeze").read_text().strip(),
        frozen[0],
    )


def test_a_user_delay_never_reaches_a_limited_ancestor_it_does_not_own(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """The issue's attack: nobody's own cgroup has no memory.max; the nearest limited
    ancestor is root's.  The daemon ignores the delay (says so once) and leaves root's
    cgroup alone: no valve, no freeze, root's process neither frozen nor killed; the
    kernel handles nobody's OOM as for any unmanaged cgroup."""
    shared = cgroups.make("shared", limit=160 * MIB)
    rootjob = cgroups.make("shared/rootjob", limit=None)
    deleg = cgroups.make("shared/deleg", limit=None)
    delegate(cgroups, deleg)
    nobody_ranks(cgroups, deleg, "job:oom_delay_ms:5000")
    job = f"{deleg}/job"
    roots = cgroups.hog(rootjob, mib=16)
    before = state(cgroups, shared)
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    _, line = d.wait_for("cannot_manage", job, timeout=60)
    assert "user.* delay ignored" in line and f"up to {deleg}" in line, line
    g = as_nobody(cgroups, job, str(readable_helpers() / "grow.py"), "1024", "400", "0.002")
    deadline = time.monotonic() + 60
    while g.poll() is None and time.monotonic() < deadline:
        assert state(cgroups, shared) == before  # never the valve, never frozen
        time.sleep(0.05)
    assert g.wait(timeout=5) == -signal.SIGKILL  # the kernel's OOM, as with no delay
    assert roots.poll() is None
    assert state(cgroups, shared) == before == ("max", "0", "frozen 0")
    assert MARK not in os.listxattr(cgroups.path(shared))
    assert events_file(cgroups, rootjob, local=True)["oom_kill"] == 0
    kinds = d.kinds()
    assert "daemon_took_over" not in kinds and "valve_frozen" not in kinds
    assert not any(k.startswith(("daemon_kill", "daemon_escalated")) for k in kinds)
    assert sum("user.* delay ignored" in t for _, t in d.lines) == 1  # said once
    assert d.stop() == 0


def test_a_user_delay_is_bounded_at_the_delegation_root(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """With a limit of the delegation's own (root's memory.max on nobody's delegated
    cgroup), that is the domain: the valve sits there, the victim is nobody's by
    nobody's ranking, and root's cgroup above is untouched."""
    shared = cgroups.make("shared", limit=256 * MIB)
    rootjob = cgroups.make("shared/rootjob", limit=None)
    deleg = cgroups.make("shared/deleg", limit=128 * MIB)
    delegate(cgroups, deleg)
    nobody_ranks(cgroups, deleg, "job:oom_delay_ms:0", "job/a:badness:100", "job/b:badness:900")
    job = f"{deleg}/job"
    roots = cgroups.hog(rootjob, mib=16)
    small = as_nobody(cgroups, f"{job}/a", str(readable_helpers() / "hog.py"), "8")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    _, line = d.wait_for("daemon_took_over", job, timeout=60)
    assert f" domain={deleg}" in line, line
    g = as_nobody(cgroups, f"{job}/b", str(readable_helpers() / "grow.py"), "1024", "400", "0.005")
    _, line = d.wait_for("daemon_kill", job, timeout=60)
    assert f" pid={small.pid} " in line, line
    assert small.wait(timeout=30) == -signal.SIGKILL
    g.kill()
    g.wait(timeout=30)
    assert roots.poll() is None
    assert state(cgroups, shared) == ("max", "0", "frozen 0")
    assert MARK not in os.listxattr(cgroups.path(shared))
    assert events_file(cgroups, deleg, local=False)["oom_kill"] == 0
    assert d.stop() == 0


def shrink_scene(tc: TestCgroups) -> tuple[str, dict[str, subprocess.Popen[bytes]]]:
    top = tc.make("jobs", limit=256 * MIB)
    procs = {}
    for name, badness, mib in (("low", "100", 40), ("mid", "500", 40), ("high", "900", 100)):
        cg = tc.make(f"jobs/{name}", limit=None)
        set_xattr(tc, cg, "badness", badness)
        procs[name] = tc.hog(cg, mib=mib)
    return top, procs


def usage(tc: TestCgroups, cg: str) -> int:
    return int((tc.path(cg) / "memory.current").read_text())


def test_the_kernel_kills_its_own_pick_inside_a_memory_max_write(cgroups: TestCgroups) -> None:
    """The behaviour set-limit exists for (documented in docs/daemon.md): a memory.max
    below the usage makes the kernel OOM-kill, synchronously, its biggest task."""
    top, procs = shrink_scene(cgroups)
    kmsg = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(kmsg, 0, os.SEEK_END)  # only what the kernel logs from here on
    fd = os.open(cgroups.path(top) / "memory.max", os.O_WRONLY)
    try:
        os.write(fd, str(usage(cgroups, top) - 20 * MIB).encode())
    finally:
        os.close(fd)
    assert procs["high"].wait(timeout=30) == -signal.SIGKILL  # badness 900 dies
    assert events_file(cgroups, top, local=False)["oom_kill"] >= 1
    # ... first: the kernel may kill again while its first victim is still exiting (the
    # write loops until the usage fits), but its own pick, the biggest, went first
    ours = {p.pid for p in procs.values()}
    killed = [pid for pid in _killed_pids_in_kmsg(kmsg) if pid in ours]
    assert killed[:1] == [procs["high"].pid], killed


def _killed_pids_in_kmsg(fd: int) -> list[int]:
    """The pids of the ``Killed process PID`` lines read from the /dev/kmsg ``fd``
    (non-blocking), oldest first; closes it."""
    out: list[int] = []
    try:
        while True:
            try:
                rec = os.read(fd, 8192).decode("utf-8", "replace")
            except BlockingIOError:
                return out
            except OSError:  # EPIPE: a record overwritten while we read; go on
                continue
            text = rec.split(";", 1)[-1]
            if text.startswith(("Killed process ", "Memory cgroup out of memory: Killed process ")):
                out.append(int(text.split("Killed process ", 1)[1].split()[0]))
    finally:
        os.close(fd)


def test_set_limit_shrinks_by_policy(cgroups: TestCgroups, tmp_path: Path) -> None:
    top, procs = shrink_scene(cgroups)
    target = usage(cgroups, top) - 20 * MIB
    r = run_cli(tmp_path, "set-limit", top, str(target), "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [k["pid"] for k in doc["killed"]] == [procs["low"].pid] and doc["valve"], doc
    assert procs["low"].wait(timeout=15) == -signal.SIGKILL
    assert procs["mid"].poll() is None and procs["high"].poll() is None
    d = cgroups.path(top)
    assert int((d / "memory.max").read_text()) == target // 4096 * 4096
    assert (d / "memory.high").read_text().strip() == "max"  # restored
    ev = events_file(cgroups, top, local=False)
    assert (ev["oom"], ev["oom_kill"]) == (0, 0), ev  # the kernel never had to choose
    assert journaled(tmp_path, "manual_kill", procs["low"].pid)["by"] == "set-limit"


def test_set_limit_dry_run_changes_nothing(cgroups: TestCgroups, tmp_path: Path) -> None:
    top, procs = shrink_scene(cgroups)
    r = run_cli(tmp_path, "set-limit", top, str(usage(cgroups, top) - 20 * MIB), "-n", "--json")
    assert r.returncode == 0, r.stderr
    assert [k["pid"] for k in json.loads(r.stdout)["would_kill"]] == [procs["low"].pid]
    assert (cgroups.path(top) / "memory.max").read_text().strip() == str(256 * MIB)
    assert all(p.poll() is None for p in procs.values())


def test_no_victim_kills_nothing_and_leaves_nothing_frozen(
    cgroups: TestCgroups, tmp_path: Path, daemons: list[Daemon]
) -> None:
    """Everything in the domain is "never" (trusted badness 1000): the daemon kills
    nothing, escalation included, says so once, and does not leave the domain frozen
    (the freeze only bridges the time until a victim dies)."""
    top = cgroups.make("jobs", limit=128 * MIB)
    keep = cgroups.make("jobs/keep", limit=None)
    set_xattr(cgroups, keep, "badness", "1000")
    set_xattr(cgroups, top, "oom_delay_ms", "0")
    d = Daemon(tmp_path, cgroups.parent, "--max-rounds", "1", "--grace", "200ms")
    daemons.append(d)
    d.wait_for("daemon_took_over", top, timeout=60)
    g = cgroups.spawn(keep, [sys.executable, str(HELPERS / "grow.py"), "1024", "400", "0.002"])
    d.wait_for("no_victim", top, timeout=60)
    _, line = d.wait_for("daemon_escalated", top, timeout=60)
    assert ' killed="" ' in line and f" spared={g.pid}" in line, line
    time.sleep(2.0)  # ten grace periods: nothing killed, nothing said again
    kinds = d.kinds()
    assert "daemon_kill" not in kinds
    assert kinds.count("no_victim") == 1 and kinds.count("daemon_escalated") == 1
    assert (cgroups.path(top) / "cgroup.freeze").read_text().strip() == "0"
    journal = tmp_path / "journal.jsonl"
    records = [json.loads(x) for x in journal.read_text().splitlines()] if journal.exists() else []
    assert not [r for r in records if r.get("kind") in ("user_kill", "manual_kill")]
    g.kill()
    g.wait(timeout=30)
    assert d.stop() == 0
    assert (cgroups.path(top) / "memory.high").read_text().strip() == "max"
