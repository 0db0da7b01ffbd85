"""Benchmark: peak memory of the single-document ``--json`` against ``--json-lines`` at
100,000 events (target: ``--json`` constant memory, like ``--json-lines``).

No root needed: ``python3 bench/stream_bench.py [--n 100000] [--before /work/main]``.
It builds, in a temp dir, a fixture host (FakeHost) whose journal holds N kill-all
records (bench/counters_bench.py's, in time order) and a dmesg-style kernel log of N
small memcg OOM reports (the invoked line, the limit line, a task table of 3 rows, the
oom-kill and Killed process lines) and one host OOM report whose task table has N
rows (explain-kill's document holds every candidate), then runs each command once as a subprocess and
prints the child's peak RSS (its VmHWM at exit, bench/counters_bench.py's wrapper: the
memcgctl process itself) and the bytes it wrote.  ``--before DIR`` runs the same
commands with the memcgctl of another checkout too (e.g. main's, for a before/after
table).  No assertions.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.counters_bench import RUN, fill  # noqa: E402
from tests.fakehost import FakeHost  # noqa: E402


def report(k: int) -> str:
    """One memcg OOM report of dmesg lines (kernel 5.15 layout), killing pid 10000+k."""
    t = f"[{k / 100 + 1:>12.6f}]"
    pid = 10_000 + k
    cg = f"/batch/job{k % 50}"
    rows = "".join(
        f"{t} [{p:>7}]  1000 {p:>5}   900000 {rss:>8}   409600        0             0 {name}\n"
        for p, rss, name in (
            (pid - 2, 1000, "sh"),
            (pid - 1, 2000, "worker"),
            (pid, 250000, "java"),
        )
    )
    return (
        f"{t} java invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n"
        f"{t} memory: usage 1048576kB, limit 1048576kB, failcnt 91\n"
        f"{t} Tasks state (memory values in pages):\n"
        f"{t} [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name\n"
        f"{rows}"
        f"{t} oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        f"oom_memcg={cg},task_memcg={cg},task=java,pid={pid},uid=1000\n"
        f"{t} Memory cgroup out of memory: Killed process {pid} (java) total-vm:3600000kB, "
        "anon-rss:1000000kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:400kB "
        "oom_score_adj:0\n"
    )


def big_table(n: int) -> str:
    """One host OOM report whose task table has ``n`` rows (a node of many processes)."""
    t = "[ 5000.000000]"
    rows = "".join(
        f"{t} [{p:>7}]  1000 {p:>7}   900000 {1000 + p % 5000:>8}   409600        0"
        f"             0 worker{p % 7}\n"
        for p in range(1000, 1000 + n)
    )
    victim = 1000 + 4999  # the most rss: 1000 + 4999 pages
    return (
        f"{t} java invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0\n"
        f"{t} Tasks state (memory values in pages):\n"
        f"{t} [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name\n"
        f"{rows}"
        f"{t} oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,"
        f"global_oom,task_memcg=/batch,task=worker{victim % 7},pid={victim},uid=1000\n"
        f"{t} Out of memory: Killed process {victim} (worker{victim % 7}) total-vm:3600000kB, "
        "anon-rss:1000000kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:400kB "
        "oom_score_adj:0\n"
    )


def write_log(path: Path, n: int) -> None:
    with path.open("w") as f:
        for k in range(n):
            f.write(report(k))


def peak(code: Path, argv: list[str], env: dict[str, str]) -> tuple[int, int, float]:
    """(peak RSS kB, bytes written, seconds) of ``memcgctl ARGV`` run from ``code``."""
    hwm = Path(env["BENCH_HWM"])
    start = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-c", RUN, *argv],
        cwd=code,
        env={**env, "PYTHONPATH": str(code)},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert p.stdout is not None
    size = 0
    while chunk := p.stdout.read(1 << 16):
        size += len(chunk)
    if p.wait() != 0:
        raise SystemExit(f"{code}: memcgctl {' '.join(argv)}: exit {p.returncode}")
    return int(hwm.read_text()), size, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="journal records / OOM reports")
    ap.add_argument("--before", type=Path, help="another checkout to measure too")
    opts = ap.parse_args()
    codes = [("after", ROOT)] + ([("before", opts.before.resolve())] if opts.before else [])
    with tempfile.TemporaryDirectory(prefix="memcgctl-bench-") as tmp:
        base = Path(tmp)
        host = FakeHost(base, version=1)
        host.cgroup("/batch", limit=512 << 20)
        for j in range(50):
            host.cgroup(f"/batch/job{j}", limit=64 << 20)
        host.process(1, "/", comm="init")
        (base / "kmsg").write_text("")
        state = base / "state"
        fill(state, opts.n)
        log = base / "kern.log"
        write_log(log, opts.n)
        table = base / "table.log"
        table.write_text(big_table(opts.n))
        env = {**os.environ, **host.cli_env()}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["MEMCGCTL_JOURNAL_MAX_BYTES"] = "64M"  # keep all N records
        env["MEMCGCTL_STATE_DIR"] = str(state)
        env["BENCH_HWM"] = str(base / "hwm")
        commands = [
            ("events --json (journal)", ["events", "--json"]),
            ("events --json-lines (journal)", ["events", "--json-lines"]),
            ("events --from --json", ["events", "--from", str(log), "--json"]),
            ("events --from --json-lines", ["events", "--from", str(log), "--json-lines"]),
            ("explain-kill --from --json", ["explain-kill", "--from", str(log), "--json"]),
            ("explain-kill --from (text)", ["explain-kill", "--from", str(log)]),
            ("explain-kill, N tasks, --json", ["explain-kill", "--from", str(table), "--json"]),
            ("explain-kill, N tasks (text)", ["explain-kill", "--from", str(table)]),
        ]
        print(
            f"{opts.n} journal records; kernel log {log.stat().st_size / 1e6:.0f} MB with "
            f"{opts.n} reports; a host OOM report of N={opts.n} tasks; "
            f"python {sys.version.split()[0]}; peak RSS = the child's VmHWM"
        )
        print(f"{'command':<32} {'code':<7} {'peak RSS MB':>11} {'output MB':>10} {'wall s':>7}")
        for label, argv in commands:
            for name, code in codes:
                rss, size, wall = peak(code, argv, env)
                print(f"{label:<32} {name:<7} {rss / 1024:>11.1f} {size / 1e6:>10.1f} {wall:>7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
