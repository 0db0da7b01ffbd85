"""Benchmark: `events --follow` latency and idle CPU (target: ≤ 100 ms, CPU near 0).

Run as root on a host with the v1 memory controller: ``python3 bench/events_bench.py``.
It creates a test memcg (tests/realkernel.py, limit 32 MiB), starts
``memcgctl events CG --follow --json`` as a subprocess, measures its CPU time over a few
idle seconds, then triggers a series of real OOM kills and measures, for each, the time
from the kernel's log record (its kmsg timestamp, CLOCK_MONOTONIC) to the moment the
JSON line is read from the subprocess's stdout.
"""

from __future__ import annotations

import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realkernel import HELPERS, TestCgroups, v1_memory_mount  # noqa: E402

KILLS = 12
IDLE_S = 5.0


class Lines:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def next(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` from /proc/PID/stat (fields 14 and 15, after
    the ')' that ends comm)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    if os.geteuid() != 0:
        print("events_bench: needs root", file=sys.stderr)
        return 2
    mount = v1_memory_mount()
    if mount is None:
        print("events_bench: no memory cgroup controller", file=sys.stderr)
        return 2
    tc = TestCgroups(mount)
    state = tempfile.mkdtemp(prefix="memcgctl-bench-")
    follower = None
    try:
        cg = tc.make("bench", limit=32 << 20)
        follower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memcgctl",
                "--state-dir",
                state,
                "events",
                tc.parent,
                "--follow",
                "--json",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert follower.stdout is not None and follower.stderr is not None
        err = Lines(follower.stderr.fileno())
        line = err.next(10)
        if line is None or b"following" not in line:
            print(f"events_bench: follower did not start: {line!r}", file=sys.stderr)
            return 1
        time.sleep(0.5)
        c0 = cpu_seconds(follower.pid)
        t0 = time.monotonic()
        time.sleep(IDLE_S)
        c1 = cpu_seconds(follower.pid)
        idle_cpu = max(0.0, (c1 - c0) / (time.monotonic() - t0))

        out = Lines(follower.stdout.fileno())
        latencies = []
        for _ in range(KILLS):
            grower = tc.spawn(cg, [sys.executable, str(HELPERS / "grow.py"), "1024", "200"])
            found = None
            while found is None:
                raw = out.next(20)
                if raw is None:
                    break
                seen = time.monotonic()
                ev = json.loads(raw)
                if os.environ.get("BENCH_DEBUG"):
                    print(raw, file=sys.stderr)
                if ev.get("kind") == "oom_kill" and ev.get("pid") == grower.pid:
                    found = (seen, ev)
            grower.wait(timeout=20)
            if found is None:
                print(f"events_bench: no event for pid {grower.pid}", file=sys.stderr)
                return 1
            seen, ev = found
            latencies.append((seen - ev["usec"] / 1e6) * 1000)
        lat = sorted(latencies)
        p95 = lat[min(len(lat) - 1, round(0.95 * (len(lat) - 1)))]
        print(f"follow latency over {len(lat)} real OOM kills (kernel record -> line read), ms:")
        print("  " + " ".join(f"{x:.1f}" for x in latencies))
        print(
            f"  median {statistics.median(lat):.1f}  p95 {p95:.1f}  max {lat[-1]:.1f}"
            f"  (limit 100 ms: ratio max/limit {lat[-1] / 100:.2f})"
        )
        print(f"idle CPU of events --follow over {IDLE_S:.0f}s: {idle_cpu * 100:.3f}% of one core")
        return 0
    finally:
        if follower is not None:
            follower.terminate()
            follower.wait(timeout=5)
        tc.cleanup()


if __name__ == "__main__":
    sys.exit(main())
