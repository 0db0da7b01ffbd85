"""Benchmark (target: at most 1.5x the bare loop, linear in processes): ``predict-victim --policy kernel`` and ``ps`` over the
whole host against a bare Python loop that reads /proc/PID/status and
/proc/PID/oom_score_adj for every process.

Spawns 100, 1,000 and 3,000 extra sleeping processes in test memcgs (≤ 500 per memcg
and ≤ 1,000 per test parent, each limited to 256 MiB; a sleeper costs ~200 KiB),
measures (best of N, the contenders interleaved so that other load on the host hits
them alike), and prints the ratios.  Target: ≤ 1.5× and linear growth.  Needs root and a memory cgroup hierarchy;
everything it creates is removed at the end, also on failure or Ctrl-C.

    python3 bench/predict_bench.py [--repeat 5] [--sizes 100,1000,3000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memcgctl.env import Env  # noqa: E402
from memcgctl.logic.kernelheuristic import select_kernel  # noqa: E402
from memcgctl.snapshot import kernel_params  # noqa: E402
from memcgctl.vocab.cgpath import CgroupPath  # noqa: E402
from tests.realkernel import TestCgroups, v1_memory_mount  # noqa: E402

PER_MEMCG = 500
PER_PARENT = 1000  # TestCgroups limits its parent to 256 MiB too
LIMIT = 256 << 20


def bare_loop() -> int:
    """The yardstick: read status and oom_score_adj of every pid, nothing else."""
    n = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                f.read()
            with open(f"/proc/{name}/oom_score_adj", "rb") as f:
                f.read()
        except OSError:
            continue
        n += 1
    return n


def lib_predict(state: Path) -> int:
    env = Env(state_dir=state)
    snap = env.snapshot(CgroupPath("/"))
    d = select_kernel(
        snap,
        CgroupPath("/"),
        kernel_params(env.proc, snap),
    )
    return len(d.candidates)


def lib_ps(state: Path) -> int:
    env = Env(state_dir=state)
    snap = env.snapshot(CgroupPath("/"), with_oom_score=True)
    return len([p.to_json() for p in snap.subtree_processes(CgroupPath("/"))])


def cli(args: list[str], state: Path) -> Callable[[], int]:
    def run() -> int:
        subprocess.run(
            [sys.executable, "-m", "memcgctl", *args],
            cwd=ROOT,
            env={**os.environ, "MEMCGCTL_STATE_DIR": str(state)},
            stdout=subprocess.DEVNULL,
            check=True,
        )
        return 0

    return run


def python_startup() -> int:
    subprocess.run([sys.executable, "-c", "import click"], check=True)
    return 0


def best_of(fns: dict[str, Callable[[], int]], repeat: int) -> dict[str, float]:
    """The best wall time of each, run round-robin."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


class Sleepers:
    """Sleeping processes in test memcgs, spread over as many test parents as needed."""

    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.parents: list[TestCgroups] = []
        self.count = 0

    def grow_to(self, n: int) -> None:
        while self.count < n:
            if not self.parents or self.count >= PER_PARENT * len(self.parents):
                self.parents.append(TestCgroups(self.mount))
            tc = self.parents[-1]
            room = PER_PARENT * len(self.parents) - self.count
            k = min(PER_MEMCG, n - self.count, room)
            cg = tc.make(f"s{len(tc.dirs)}", limit=LIMIT)
            script = (
                f"i=0; while [ $i -lt {k} ]; do sleep 3600 & i=$((i+1)); done; echo ready; "
                "exec sleep 3600"
            )
            tc.spawn(cg, ["/bin/sh", "-c", script])
            deadline = time.monotonic() + 30
            while len(tc.pids(cg)) < k + 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            if len(tc.pids(cg)) < k + 1:
                raise RuntimeError(f"only {len(tc.pids(cg)) - 1} of {k} sleepers started in {cg}")
            self.count += k

    def cleanup(self) -> None:
        for tc in self.parents:
            tc.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--sizes", default="100,1000,3000")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates test memcgs)", file=sys.stderr)
        return 2
    mount = v1_memory_mount()
    if mount is None:
        print("no memory cgroup hierarchy mounted", file=sys.stderr)
        return 2
    sizes = [int(s) for s in opts.sizes.split(",")]
    sleepers = Sleepers(mount)
    rows = []
    startup = 0.0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = Path(tmp)
            for size in sizes:
                sleepers.grow_to(size)
                nproc = bare_loop()
                t = best_of(
                    {
                        "base": bare_loop,
                        "lp": lambda: lib_predict(state),
                        "lps": lambda: lib_ps(state),
                    },
                    opts.repeat,
                )
                c = best_of(
                    {
                        "startup": python_startup,
                        "cp": cli(["predict-victim", "--policy", "kernel", "--json"], state),
                        "cps": cli(["ps", "--json"], state),
                    },
                    max(opts.repeat // 2, 2),
                )
                startup = c["startup"]
                rows.append((size, nproc, t["base"], t["lp"], t["lps"], c["cp"], c["cps"]))
                print(f"... {size} sleepers running ({nproc} processes on the host)", flush=True)
    finally:
        sleepers.cleanup()
    print()
    print(
        f"python -c 'import click' start-up: {startup * 1000:.1f} ms "
        "(CLI columns: raw, and minus this start-up)"
    )
    hdr = (
        f"{'sleepers':>8} {'procs':>6} {'bare loop':>10} | {'lib predict':>12} "
        f"{'lib ps':>12} | {'cli predict':>18} {'cli ps':>18}"
    )
    print(hdr)
    print("-" * len(hdr))
    for size, nproc, base, lp, lps, cp, cps in rows:

        def r(t: float, base: float = base) -> str:
            return f"{t * 1000:6.1f}ms {t / base:4.2f}x"

        def rc(t: float, base: float = base) -> str:
            return f"{t / base:5.2f}x / {(t - startup) / base:5.2f}x"

        print(
            f"{size:>8} {nproc:>6} {base * 1000:8.1f}ms | {r(lp):>12} {r(lps):>12} | "
            f"{rc(cp):>18} {rc(cps):>18}"
        )
    if len(rows) >= 2:
        (_, n0, b0, l0, p0, *_), (_, n1, b1, l1, p1, *_) = rows[0], rows[-1]
        growth = n1 / n0
        print()
        print(
            f"growth {n0} -> {n1} processes ({growth:.1f}x): bare loop {b1 / b0:.1f}x, "
            f"lib predict {l1 / l0:.1f}x, lib ps {p1 / p0:.1f}x (linear = {growth:.1f}x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
