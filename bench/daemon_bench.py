"""Benchmark: daemon reaction time (target: p99 ≤ 20 ms with delay 0).

Run as root on a host with the v1 memory controller: ``python3 bench/daemon_bench.py``.
A test memcg (tests/realkernel.py; 64 MiB, OOM delay 0) is managed by
``memcgctl daemon --root <test parent>``.  For each of N real OOMs the bench starts a
grower in a low-badness child, registers its *own* OOM eventfd on the memcg, and measures
from the moment that eventfd fires (the kernel's OOM notification) to the moment the
grower's pidfd says it is dead.  For comparison it measures a bare Python handler that
reads its eventfd and SIGKILLs a known pid, with the kernel's OOM killer disabled.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realkernel import HELPERS, TestCgroups, v1_memory_mount  # noqa: E402


def oom_eventfd(tc: TestCgroups, cg: str) -> tuple[int, int]:
    ctl = os.open(tc.path(cg) / "memory.oom_control", os.O_RDONLY)
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    TestCgroups.write(tc.path(cg), "cgroup.event_control", f"{efd} {ctl}")
    return efd, ctl


def one_oom(tc: TestCgroups, top: str, low: str, bare: bool) -> float:
    """Seconds from the kernel's OOM notification to the grower's death."""
    efd, ctl = oom_eventfd(tc, top)
    try:
        g = tc.spawn(low, [sys.executable, str(HELPERS / "grow.py"), "4096", "512"])
        pidfd = os.pidfd_open(g.pid)
        p = select.poll()
        p.register(efd, select.POLLIN)
        assert p.poll(30_000), "no OOM notification"
        t0 = time.monotonic()
        if bare:
            os.eventfd_read(efd)
            os.kill(g.pid, signal.SIGKILL)
        p2 = select.poll()
        p2.register(pidfd, select.POLLIN)
        assert p2.poll(30_000), "the victim did not die"
        t1 = time.monotonic()
        os.close(pidfd)
        g.wait()
        # separate OOMs: the daemon treats an OOM within its grace (500 ms) after a kill
        # as the same livelock, so leave more than that between them
        time.sleep(0.6)
        return t1 - t0
    finally:
        os.close(efd)
        os.close(ctl)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ooms", type=int, default=25)
    args = ap.parse_args()
    mount = v1_memory_mount()
    if os.geteuid() != 0 or mount is None or not (mount / "memory.oom_control").exists():
        sys.exit("needs root and the v1 memory controller")
    tc = TestCgroups(mount)
    daemon = None
    try:
        top = tc.make("jobs", limit=64 << 20)
        low = tc.make("jobs/low", limit=None)
        os.setxattr(tc.path(low), "trusted.memcgctl.badness", b"100")
        # the bare baseline: our own handler, kernel OOM killer disabled
        TestCgroups.write(tc.path(top), "memory.oom_control", "1")
        bare = [one_oom(tc, top, low, bare=True) for _ in range(max(5, args.ooms // 2))]
        TestCgroups.write(tc.path(top), "memory.oom_control", "0")
        os.setxattr(tc.path(top), "trusted.memcgctl.oom_delay_ms", b"0")
        state = tempfile.mkdtemp(prefix="memcgctl-bench-")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "memcgctl", "--state-dir", state, "daemon", "--root", tc.parent],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert daemon.stderr is not None
        for line in daemon.stderr:
            if "daemon_took_over" in line:
                break
        reacted = [one_oom(tc, top, low, bare=False) for _ in range(args.ooms)]
        ms = [x * 1000 for x in reacted]
        bms = [x * 1000 for x in bare]
        print(f"daemon reaction over {len(ms)} real OOMs (kernel OOM notification -> victim dead):")
        print(
            f"  p50 {statistics.median(ms):.1f} ms   p99 {pct(ms, 0.99):.1f} ms   "
            f"max {max(ms):.1f} ms   (target: p99 <= 20 ms)"
        )
        print(
            f"bare Python eventfd->kill handler over {len(bms)} OOMs: "
            f"p50 {statistics.median(bms):.1f} ms   p99 {pct(bms, 0.99):.1f} ms"
        )
        print(f"ratio p50 daemon/bare: {statistics.median(ms) / statistics.median(bms):.2f}")
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=15)
        tc.cleanup()


if __name__ == "__main__":
    main()
