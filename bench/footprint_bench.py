"""Benchmark: what the idle daemon keeps resident (issue 22: daemon + guardian ≤ 20 MiB).

Run as root on a host with the v1 memory controller::

    python3 bench/footprint_bench.py [--src LABEL=CHECKOUT ...] [--python PYTHON]

Under one test parent (tests/realkernel.py, removed at the end) it builds a tree of
1,000 cgroups (40 groups of 24, and the groups), 96 of them managed (an OOM delay and
a 64 MiB limit), starts ``memcgctl daemon --root PARENT`` from each checkout given, waits
until it took over the 96, lets it idle (``--idle`` s, rescans included), then reads
``/proc/PID/status`` (RssAnon, RssFile, RssShmem) and ``/proc/PID/smaps_rollup`` (Pss)
of the daemon and of its guardian process, if any.  Two ways to start it:

* ``by hand``: the default, a guardian process beside the daemon;
* ``systemd unit``: as the installed unit starts it — this script plays systemd (a
  notify socket, ``$WATCHDOG_USEC``) and passes what that checkout's ``install-unit``
  writes (``--guardian=systemd``, or ``--no-guardian`` before that option).

The daemon runs as ``PYTHON -m memcgctl`` with ``PYTHONPATH=CHECKOUT``; give a
``--python`` whose site-packages run no ``.pth`` hooks of their own (a plain venv with
click, rich, psutil and tabulate) so that the host's additions are not measured.
Each checkout's modules are compiled first (``PYTHON -m compileall``), as an install
has them: a daemon that compiles its sources itself (no ``.pyc``, or stale ones and
``PYTHONDONTWRITEBYTECODE``) keeps ~1 MiB more resident, the compiler's garbage.
Prints one table; no timing, no assertion.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realkernel import TestCgroups, v1_memory_mount  # noqa: E402

GROUPS, PER_GROUP, MANAGED_EVERY = 40, 24, 10  # 40 + 40 x 24 = 1,000 cgroups


@dataclass
class Resident:
    rss_kib: int = 0  # RssAnon + RssFile + RssShmem
    pss_kib: int = 0

    def __add__(self, other: Resident) -> Resident:
        return Resident(self.rss_kib + other.rss_kib, self.pss_kib + other.pss_kib)

    def cell(self) -> str:
        return f"{self.rss_kib / 1024:.2f} ({self.pss_kib / 1024:.2f})"


def resident(pid: int) -> Resident:
    r = Resident()
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("RssAnon:", "RssFile:", "RssShmem:")):
            r.rss_kib += int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            r.pss_kib += int(line.split()[1])
    return r


def children(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(b")", 1)[1].split()[1]) == pid:
                out.append(int(d.name))
    return out


def build_tree(tc: TestCgroups) -> list[str]:
    """The 1,000 cgroups; returns the managed ones (an OOM delay, a limit)."""
    managed = []
    n = 0
    for g in range(GROUPS):
        tc.make(f"g{g:02}", limit=None)
        for c in range(PER_GROUP):
            managed_one = n % MANAGED_EVERY == 0
            cg = tc.make(f"g{g:02}/c{c:02}", limit=(64 << 20) if managed_one else None)
            if managed_one:
                os.setxattr(tc.path(cg), "trusted.memcgctl.oom_delay_ms", b"2000")
                managed.append(cg)
            n += 1
    return managed


def measure(
    python: str, src: Path, tc: TestCgroups, managed: list[str], unit: bool, idle: float
) -> tuple[Resident, Resident, int]:
    """(daemon, guardians, number of guardian processes) once idle."""
    work = Path(tempfile.mkdtemp(prefix="memcgctl-footprint-"))
    env = dict(os.environ, PYTHONPATH=str(src))
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        env.pop(name, None)
    argv = [python, "-m", "memcgctl", "--state-dir", str(work / "state"), "daemon"]
    argv += ["--root", tc.parent]
    sock = None
    if unit:
        helptext = subprocess.run(
            [python, "-m", "memcgctl", "daemon", "--help"],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        argv.append("--guardian=systemd" if "--guardian" in helptext else "--no-guardian")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(work / "notify"))
        env.update(NOTIFY_SOCKET=str(work / "notify"), WATCHDOG_USEC="10000000")
    # cwd: not a checkout (``-m`` puts the working directory first on sys.path)
    proc = subprocess.Popen(
        argv, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stderr is not None
        taken: set[str] = set()
        while not set(managed) <= taken:
            line = proc.stderr.readline()
            if not line:
                raise RuntimeError(f"the daemon ({src}) stopped before taking over")
            if "daemon_took_over" in line:
                taken.add(line.split(" cgroup=", 1)[1].split()[0])
        drain = subprocess.Popen(["cat"], stdin=proc.stderr, stdout=subprocess.DEVNULL)
        time.sleep(idle)
        daemon = resident(proc.pid)
        guards = [p for p in children(proc.pid) if p != drain.pid]
        guardian = Resident()
        for pid in guards:
            guardian = guardian + resident(pid)
        drain.kill()
        return daemon, guardian, len(guards)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if sock is not None:
            sock.close()
        time.sleep(1)  # the guardian finds nothing to release and exits
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--src",
        action="append",
        default=[],
        metavar="LABEL=CHECKOUT",
        help="a checkout to measure (repeatable; default: this one)",
    )
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--idle", type=float, default=6.0, help="seconds idle before reading")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    mount = v1_memory_mount()
    if os.geteuid() != 0 or mount is None or (mount / "cgroup.controllers").exists():
        sys.exit("needs root and the v1 memory controller")
    sources = [s.split("=", 1) for s in args.src] or [["this checkout", str(ROOT)]]
    for _, src in sources:  # the .pyc files an install has (see above)
        subprocess.run(
            [args.python, "-m", "compileall", "-q", str(Path(src) / "memcgctl")],
            stdout=subprocess.DEVNULL,
            check=True,
        )
    tc = TestCgroups(mount)
    rows = []
    try:
        managed = build_tree(tc)
        total = sum(1 for _ in tc.path(tc.parent).rglob("memory.limit_in_bytes")) - 1
        for run in range(args.runs):
            for label, src in sources:
                for unit in (False, True):
                    d, g, n = measure(args.python, Path(src), tc, managed, unit, args.idle)
                    how = "systemd unit" if unit else "by hand"
                    rows.append((label, how, run + 1, d, g, n))
    finally:
        tc.cleanup()
    py = subprocess.run(
        [args.python, "-c", "import sys; print(sys.version.split()[0])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    print(
        f"{datetime.date.today()}, kernel {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {py}; {total} cgroups under the daemon's root, {len(managed)} managed; "
        f"idle {args.idle:g} s; MiB: RssAnon+RssFile+RssShmem (Pss)"
    )
    print("| source | started | run | daemon | guardian | daemon + guardian |")
    print("|---|---|---|---|---|---|")
    for label, how, run, d, g, n in rows:
        guardian = f"{g.cell()}" if n else "none"
        print(f"| {label} | {how} | {run} | {d.cell()} | {guardian} | {(d + g).cell()} |")


if __name__ == "__main__":
    main()
