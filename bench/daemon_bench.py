"""Benchmark: daemon reaction time (target: p99 ≤ 20 ms with delay 0).

Run as root on a host with the v1 memory controller: ``python3 bench/daemon_bench.py``.
A test memcg (tests/realkernel.py; 64 MiB, OOM delay 0) is managed by
``memcgctl daemon --root <test parent>``.  For each of N real OOMs the bench starts a
grower in a low-badness child, registers its *own* OOM eventfd on the memcg, and measures
from the moment that eventfd fires (the kernel's OOM notification) to the moment the
grower's pidfd says it is dead.  For comparison it measures a bare Python handler that
reads its eventfd and SIGKILLs a known pid, with the kernel's OOM killer disabled.

``--near``: the daemon's standing plan (issue 22).  The victim is a 16 MiB process in
the low-badness child and the OOM comes from a grower in a high-badness child that adds
1 MiB every 20 ms, so the memcg spends a while near its limit first (the daemon chooses
ahead there); the same measurement, and how many kills used the plan (``plan_age_ms``).
``--checkout DIR`` runs another checkout's memcgctl (e.g. a ``git archive`` of main).
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


def one_oom(tc: TestCgroups, top: str, low: str, bare: bool, high: str | None = None) -> float:
    """Seconds from the kernel's OOM notification to the victim's death: the grower, or
    with ``high`` a 16 MiB process in low while a slow grower in high runs out."""
    efd, ctl = oom_eventfd(tc, top)
    grower = None
    try:
        if high is None:
            g = tc.spawn(low, [sys.executable, str(HELPERS / "grow.py"), "4096", "512"])
        else:
            g = tc.hog(low, mib=16)
            grower = tc.spawn(
                high, [sys.executable, str(HELPERS / "grow.py"), "1024", "512", "0.02"]
            )
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
        if grower is not None:
            grower.kill()
            grower.wait()
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
    ap.add_argument("--near", action="store_true", help="the victim is not the grower")
    ap.add_argument("--checkout", type=Path, default=ROOT, help="run this checkout's memcgctl")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare handler")
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
        high = None
        if args.near:
            high = tc.make("jobs/high", limit=None)
            os.setxattr(tc.path(high), "trusted.memcgctl.badness", b"900")
        # the bare baseline: our own handler, kernel OOM killer disabled
        TestCgroups.write(tc.path(top), "memory.oom_control", "1")
        n_bare = 0 if args.no_bare else max(5, args.ooms // 2)
        bare = [one_oom(tc, top, low, True, high) for _ in range(n_bare)]
        TestCgroups.write(tc.path(top), "memory.oom_control", "0")
        os.setxattr(tc.path(top), "trusted.memcgctl.oom_delay_ms", b"0")
        state = tempfile.mkdtemp(prefix="memcgctl-bench-")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "memcgctl", "--state-dir", state, "daemon", "--root", tc.parent],
            cwd=args.checkout,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert daemon.stderr is not None
        for line in daemon.stderr:
            if "daemon_took_over" in line:
                break
        log = Path(state) / "daemon.log"
        drain = subprocess.Popen(["cat"], stdin=daemon.stderr, stdout=log.open("w"))
        reacted = [one_oom(tc, top, low, False, high) for _ in range(args.ooms)]
        ms = [x * 1000 for x in reacted]
        bms = [x * 1000 for x in bare]
        print(f"daemon reaction over {len(ms)} real OOMs (kernel OOM notification -> victim dead):")
        print(
            f"  p50 {statistics.median(ms):.1f} ms   p99 {pct(ms, 0.99):.1f} ms   "
            f"max {max(ms):.1f} ms   (target: p99 <= 20 ms)"
        )
        kills = [x for x in log.read_text().splitlines() if ">daemon_kill " in x]
        planned = sum(" plan_age_ms=" in x for x in kills)
        print(f"kills whose victim was chosen ahead (plan_age_ms): {planned} of {len(kills)}")
        if bms:
            print(
                f"bare Python eventfd->kill handler over {len(bms)} OOMs: "
                f"p50 {statistics.median(bms):.1f} ms   p99 {pct(bms, 0.99):.1f} ms"
            )
            print(f"ratio p50 daemon/bare: {statistics.median(ms) / statistics.median(bms):.2f}")
        drain.kill()
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=15)
        tc.cleanup()


if __name__ == "__main__":
    main()
