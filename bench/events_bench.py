"""Benchmark: `events --follow` latency and idle CPU (target: ≤ 100 ms, CPU near 0);
with ``--history``: the cost of the history (``events CG --json``) against the size of
the journal (target: 25 k and 100 k records within 1.25× of an empty journal).

``python3 bench/events_bench.py --history [--runs 15]`` needs no privileges: a fixture
tree (FakeHost) through the MEMCGCTL_* variables, journals of 0, 25 k and 100 k
kill-all records (bench/counters_bench.py's), each command's fastest wall time and
largest peak RSS (its own VmHWM), for a cgroup where nothing happened (``/quiet``) and
one that holds 1 in 50 of the records (``/batch/job7``).  No assertions.

The follow benchmark runs as root on a host with the v1 memory controller:
``python3 bench/events_bench.py``.
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


HISTORY_SIZES = (0, 25_000, 100_000)
HISTORY_COMMANDS = {
    "events /quiet --json": ["events", "/quiet", "--json"],
    "events /batch/job7 --json": ["events", "/batch/job7", "--json"],
}


def history(runs: int) -> int:
    import compileall

    from bench.counters_bench import fill, timed
    from tests.fakehost import FakeHost

    compileall.compile_dir(ROOT / "memcgctl", quiet=1)
    rows: list[tuple[str, int, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="memcgctl-bench-") as tmp:
        host = FakeHost(Path(tmp), version=1)
        host.cgroup("/quiet", limit=64 << 20)
        host.cgroup("/batch", limit=512 << 20)
        for j in range(50):
            host.cgroup(f"/batch/job{j}", limit=64 << 20)
        host.process(1, "/", comm="init")
        (Path(tmp) / "kmsg").write_text("")
        base_env = {**os.environ, **host.cli_env()}
        base_env.pop("PYTHONPATH", None)
        base_env["MEMCGCTL_JOURNAL_MAX_BYTES"] = "32M"
        base_env["BENCH_HWM"] = str(Path(tmp) / "hwm")
        for size in HISTORY_SIZES:
            state = Path(tmp) / f"state-{size}"
            fill(state, size)
            env = {**base_env, "MEMCGCTL_STATE_DIR": str(state)}
            for label, argv in HISTORY_COMMANDS.items():
                timed(argv, env)  # warm: the page cache, the bytecode
                samples = [timed(argv, env) for _ in range(runs)]
                rows.append((label, size, min(x[0] for x in samples), max(x[1] for x in samples)))
    print(
        f"python: {sys.executable} {sys.version.split()[0]}, {runs} runs each"
        " (fastest run: the least disturbed by the machine's load; largest peak RSS)"
    )
    print(f"{'command':<28} {'records':>8} {'time ms':>8} {'peak RSS MB':>12}  vs empty")
    empty = {label: (t, r) for label, size, t, r in rows if size == 0}
    for label, size, t, rss in rows:
        t0, r0 = empty[label]
        print(
            f"{label:<28} {size:>8} {t * 1000:>8.1f} {rss / 1024:>12.1f}"
            f"  {t / t0:4.2f}x time, {rss / r0:4.2f}x RSS"
        )
    return 0


if __name__ == "__main__":
    if "--history" in sys.argv:
        n = sys.argv.index("--runs") + 1 if "--runs" in sys.argv else 0
        raise SystemExit(history(max(int(sys.argv[n]) if n else 15, 5)))
    sys.exit(main())
