"""Benchmark: the daemon's idle CPU over a Kubernetes-node-sized tree (issue 22), one
daemon per checkout over the same tree — e.g. before (``/work/main``) and after the
tree watch (daemon/treewatch.py).

Run as root on a host with the v1 memory controller::

    python3 bench/idle_bench.py --checkout /work/main --checkout . [--seconds 60]

The tree (tests/nodetree.py's, as in bench/scale_bench.py: ``kubepods/<qos>/podNNNN/c<k>/{pause,app}`` and
``system.slice/svcNNNN.service``) is built once under one test parent and removed at
the end; ``--managed`` pods get an OOM delay.  Each daemon runs with ``--rescan 2s
--no-guardian``; once it has taken every managed pod over, its user + system CPU time
(``/proc/PID/stat``) and voluntary context switches (its wake-ups) are read over
``--seconds``.  Nothing OOMs: this is the cost of watching.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.nodetree import build_system, build_tree  # noqa: E402
from tests.realkernel import TestCgroups, v1_memory_mount  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def wakes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def idle(checkout: Path, tc: TestCgroups, managed: list[str], seconds: float) -> dict[str, float]:
    state = Path(tempfile.mkdtemp(prefix="memcgctl-idle-"))
    p = subprocess.Popen(
        [
            *(sys.executable, "-m", "memcgctl", "--state-dir", str(state), "daemon"),
            *("--root", tc.parent, "--rescan", "2s", "--no-guardian"),
        ],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert p.stderr is not None
    t0 = time.monotonic()
    taken: set[str] = set()
    while not set(managed) <= taken:
        line = p.stderr.readline()
        if not line:
            raise RuntimeError(f"{checkout}: the daemon stopped")
        if "daemon_took_over" in line:
            taken.add(line.split(" cgroup=", 1)[1].split()[0])
    start_s = time.monotonic() - t0
    drain = subprocess.Popen(["cat"], stdin=p.stderr, stdout=subprocess.DEVNULL)
    time.sleep(2.5)  # past the first periodic rescan
    c0, w0, t1 = cpu_s(p.pid), wakes(p.pid), time.monotonic()
    time.sleep(seconds)
    c1, w1, t2 = cpu_s(p.pid), wakes(p.pid), time.monotonic()
    p.send_signal(signal.SIGTERM)
    p.wait(timeout=60)
    drain.wait(timeout=10)
    return {"cpu": (c1 - c0) / (t2 - t1), "wakes": (w1 - w0) / (t2 - t1), "start": start_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", action="append", type=Path, required=True)
    ap.add_argument("--pods", type=int, default=300)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--managed", type=int, default=10, help="pods with an OOM delay")
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    mount = v1_memory_mount()
    if os.geteuid() != 0 or mount is None:
        sys.exit("needs root and the v1 memory controller")
    tc = TestCgroups(mount)
    try:
        t0 = time.monotonic()
        _, pods = build_tree(tc, args.pods)
        build_system(tc, args.services)
        managed = pods[:: max(1, len(pods) // args.managed)][: args.managed]
        for pod in managed:
            os.setxattr(tc.path(pod), "trusted.memcgctl.oom_delay_ms", b"1000")
        n = sum(1 for _ in tc.path(tc.parent).rglob("memory.limit_in_bytes"))
        print(f"tree: {n} cgroups below {tc.parent}, built in {time.monotonic() - t0:.0f} s")
        rows = []
        for co in args.checkout:
            r = idle(co.resolve(), tc, managed, args.seconds)
            rev = subprocess.run(
                ["git", "-C", str(co), "log", "-1", "--format=%h %s"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()[:60]
            rows.append((rev, r))
            print(f"{rev}: {r}", flush=True)
    finally:
        tc.cleanup()
    print(
        f"\n{time.strftime('%Y-%m-%d')}, kernel {platform.release()}, {os.cpu_count()} CPUs; "
        f"{n} cgroups, {args.managed} managed, --rescan 2s, idle over {args.seconds:.0f} s\n"
    )
    print("| daemon (commit) | CPU, % of one core | wake-ups/s | start → all taken over |")
    print("|---|---|---|---|")
    for rev, r in rows:
        print(f"| {rev} | {r['cpu'] * 100:.2f} % | {r['wakes']:.1f} | {r['start']:.1f} s |")


if __name__ == "__main__":
    main()
