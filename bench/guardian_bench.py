"""Benchmark: the guardian's release latency and footprint, bash watcher against the
Python guardian (issue 22: daemon + guardian ≤ 20 MiB; guardian.py's bound: a paused
memcg never stays paused longer than its delay + 3 s).

Run as root on a host with the memory controller (v1, or cgroup v2 in the guest)::

    python3 bench/guardian_bench.py [--episodes 3]

Under one test parent (tests/realkernel.py, removed at the end): a managed memcg (limit
96 MiB, OOM delay 2 s) and a grower.  For each guardian — ``bash`` (the default: the
watcher of daemon/guardwatch.py) and ``python`` (the daemon run with a ``PATH``
without bash: the Python guardian) — and each episode, a fresh daemon:

* idle: the guardian's RssAnon+RssFile+RssShmem (Pss) after ``--idle`` s;
* **stop**: the grower reaches the limit, the daemon says ``under_oom`` and is
  SIGSTOPped at once; *under_oom → released* is until the guardian's ``guardian:``
  line (the heartbeat goes stale ``STALE_S`` after the last beat, then the release);
  SIGCONT, the daemon takes over afresh;
* **kill**: the same with SIGKILL; *killed → released* is the death's notice (the
  pipe's end of file, the pidfd) plus the release (the watcher starts an interpreter
  for it; the Python guardian imports the release module).

Times are the daemon's stderr lines as this script reads them (one reader thread),
so they include its scheduling.  Then what a release costs with nothing to restore
(``--starts`` runs): a bare interpreter start, the watcher's release command line, the
Python guardian's import and release in its running process.  Prints two tables; no
assertion.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.footprint_bench import Resident, children, resident  # noqa: E402
from memcgctl.daemon import guardian  # noqa: E402
from tests.realkernel import HELPERS, TestCgroups, v1_memory_mount  # noqa: E402
from tests.test_daemon_kernel import Daemon  # noqa: E402


def grower(tc: TestCgroups, cg: str, v2: bool) -> subprocess.Popen[bytes]:
    # v2: 1 MiB every 5 ms (the guest's pace, as tests/v2 grow); v1: unthrottled
    args = ["1024", "400", "0.005"] if v2 else ["4096", "512"]
    return tc.spawn(cg, [sys.executable, str(HELPERS / "grow.py"), *args])


def episode(
    tc: TestCgroups, top: str, low: str, v2: bool, which: str, sig: int, idle: float
) -> tuple[float, Resident | None, str]:
    """(seconds from under_oom / the kill to the guardian's line, the idle guardian's
    residency, the guardian's exe)."""
    work = Path(tempfile.mkdtemp(prefix="memcgctl-guardian-", dir="/tmp"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if which == "python":
        (work / "bin").mkdir()
        env["PATH"] = str(work / "bin")
    d = Daemon(work / "state", tc.parent, env=env)
    g = None
    try:
        d.wait_for("daemon_took_over", top, timeout=120)
        time.sleep(idle)
        guards = [p for p in children(d.proc.pid) if b"guard" in cmdline(p)]
        exe = os.readlink(f"/proc/{guards[0]}/exe") if guards else "none"
        rss = resident(guards[0]) if guards else None
        g = grower(tc, low, v2)
        t_oom, _ = d.wait_for("under_oom", top, timeout=120)
        os.kill(d.proc.pid, sig)
        t_sig = time.monotonic()
        t_rel, _ = d.wait_for("guardian:", None, timeout=120)
        took = t_rel - (t_oom if sig == signal.SIGSTOP else t_sig)
        if sig == signal.SIGSTOP:
            os.kill(d.proc.pid, signal.SIGCONT)
        return took, rss, exe
    finally:
        if g is not None and g.poll() is None:
            g.kill()
        if g is not None:
            g.wait()
        if d.proc.poll() is None:
            d.stop(signal.SIGTERM)
        time.sleep(1)  # the guardian finds nothing more and exits


def release_costs(tc: TestCgroups, n: int) -> list[tuple[str, list[float]]]:
    """What a release costs before it restores anything (no marks to find): a bare
    ``python3 -S`` start; the bash watcher's release command line, whole; the Python
    guardian's share, already running (import the release module, run it)."""
    work = Path(tempfile.mkdtemp(prefix="memcgctl-guardian-", dir="/tmp"))
    args = ["/proc", "", str(work), tc.parent, "boot/1/1", guardian.DIED]
    release = guardian.light_argv(sys.executable, "memcgctl.daemon.guardrelease", "main", args)
    inproc = list(release)
    i = inproc.index("-c") + 1
    inproc[i] = inproc[i].replace(
        "from memcgctl.daemon.guardrelease import main;sys.exit(main(sys.argv[1:]))",
        "import time;t=time.monotonic();from memcgctl.daemon.guardrelease import main;"
        "main(sys.argv[1:]);print(time.monotonic()-t)",
    )
    costs: dict[str, list[float]] = {"bare": [], "bash": [], "python": []}
    for _ in range(n):
        for name, argv in (("bare", [sys.executable, "-S", "-c", "pass"]), ("bash", release)):
            t = time.monotonic()
            subprocess.run(argv, check=True, capture_output=True)
            costs[name].append(time.monotonic() - t)
        out = subprocess.run(inproc, check=True, capture_output=True, text=True).stdout
        costs["python"].append(float(out.split()[-1]))
    return [
        ("bare `python3 -S -c pass`", costs["bare"]),
        ("bash watcher: the release command line, whole", costs["bash"]),
        ("Python guardian: import + release, in its process", costs["python"]),
    ]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--idle", type=float, default=3.0, help="seconds idle before reading")
    ap.add_argument("--only", action="append", choices=["bash", "python"], default=[])
    ap.add_argument("--starts", type=int, default=5, help="release costs measured")
    args = ap.parse_args()
    mount = v1_memory_mount()
    if os.geteuid() != 0 or mount is None:
        sys.exit("needs root and the memory controller")
    v2 = (mount / "cgroup.controllers").exists()
    tc = TestCgroups(mount)
    rows = []
    try:
        top = tc.make("jobs", limit=96 << 20)
        low = tc.make("jobs/low", limit=None)
        os.setxattr(tc.path(top), "trusted.memcgctl.oom_delay_ms", b"2000")
        costs = release_costs(tc, args.starts)
        for which in args.only or ["bash", "python"]:
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                took, rss = [], []
                exe = ""
                for _ in range(args.episodes):
                    t, r, exe = episode(tc, top, low, v2, which, sig, args.idle)
                    took.append(t)
                    if r is not None:
                        rss.append(r)
                rows.append((which, exe, sig, took, rss))
    finally:
        tc.cleanup()
    print(
        f"{datetime.date.today()}, kernel {platform.release()} (cgroup v{2 if v2 else 1}), "
        f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}; OOM delay 2 s; "
        f"{args.episodes} episodes; MiB: RssAnon+RssFile+RssShmem (Pss)"
    )
    print("| guardian | exe | signal | to released, p50 | max | idle guardian, median |")
    print("|---|---|---|---|---|---|")
    for which, exe, sig, took, rss in rows:
        start = "under_oom → released" if sig == signal.SIGSTOP else "killed → released"
        r = Resident(
            int(statistics.median(x.rss_kib for x in rss)) if rss else 0,
            int(statistics.median(x.pss_kib for x in rss)) if rss else 0,
        )
        print(
            f"| {which} | {exe} | {signal.Signals(sig).name} ({start}) | "
            f"{statistics.median(took):.2f} s | {max(took):.2f} s | {r.cell()} |"
        )
    print()
    print(f"| a release with nothing to restore ({args.starts} runs) | p50 | max |")
    print("|---|---|---|")
    for what, times in costs:
        print(f"| {what} | {statistics.median(times):.3f} s | {max(times):.3f} s |")


if __name__ == "__main__":
    main()
