"""Benchmark: `events --from` and `explain-kill --from` on a 100 MB saved kernel log
(target: under 5 s, memory flat).

No root needed: ``python3 bench/postmortem_bench.py [--mb 100]``.  It writes a syslog-style
log to a temp dir — mostly unrelated kernel and daemon lines, with a memcg OOM report
(task table of 40 rows) every ~2 MB — then runs each command as a subprocess and reports
wall time and the child's peak RSS, for a log a tenth the size too: a streamed read has
the same peak RSS for both.
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

NOISE = [
    "kernel: [{t:>12.6f}] EXT4-fs (sda1): re-mounted. Opts: errors=remount-ro",
    "kernel: [{t:>12.6f}] IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
    "systemd[1]: Started Session {n} of user root.",
    "sshd[{n}]: Accepted publickey for root from 10.0.0.{m} port 52{m} ssh2",
    'kernel: [{t:>12.6f}] audit: type=1400 audit({t:.3f}:{n}): apparmor="STATUS" '
    'operation="profile_replace" name="/usr/bin/man" pid={n} comm="apparmor_parser"',
    "CRON[{n}]: (root) CMD (command -v debian-sa1 > /dev/null && debian-sa1 1 1)",
]


def report(t: float, k: int) -> list[str]:
    pid = 10000 + k
    cg = f"/kubepods/pod{k}/job"
    lines = [
        f"kernel: [{t:>12.6f}] java invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, "
        "oom_score_adj=0",
        f"kernel: [{t:>12.6f}] CPU: 3 PID: {pid} Comm: java Not tainted 5.15.0-91-generic #101",
        f"kernel: [{t:>12.6f}] memory: usage 1048576kB, limit 1048576kB, failcnt 91",
        f"kernel: [{t:>12.6f}] Tasks state (memory values in pages):",
        f"kernel: [{t:>12.6f}] [  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents "
        "oom_score_adj name",
    ]
    for r in range(40):
        rss = 250000 if r == 39 else 1000 + r
        p = pid if r == 39 else pid - 100 + r
        lines.append(
            f"kernel: [{t:>12.6f}] [{p:>7}]  1000 {p:>5}   900000 {rss:>8}   409600        0"
            f"             0 {'java' if r == 39 else 'worker'}"
        )
    lines += [
        f"kernel: [{t:>12.6f}] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
        f"mems_allowed=0,oom_memcg={cg},task_memcg={cg},task=java,pid={pid},uid=1000",
        f"kernel: [{t:>12.6f}] Memory cgroup out of memory: Killed process {pid} (java) "
        "total-vm:3600000kB, anon-rss:1000000kB, file-rss:0kB, shmem-rss:0kB, UID:1000 "
        "pgtables:400kB oom_score_adj:0",
    ]
    return lines


def generate(path: Path, mb: int) -> int:
    """Write about ``mb`` MB; returns the number of OOM reports."""
    target = mb * 1_000_000
    written = 0
    reports = 0
    n = 0
    with path.open("w") as f:
        while written < target:
            block = []
            for _ in range(20000):
                n += 1
                t = n / 100
                tmpl = NOISE[n % len(NOISE)]
                block.append(
                    f"Nov 30 13:{(n // 60) % 60:02d}:{n % 60:02d} host "
                    + tmpl.format(t=t, n=n, m=n % 250)
                )
            reports += 1
            block += [f"Nov 30 14:00:00 host {line}" for line in report(n / 100, reports)]
            text = "\n".join(block) + "\n"
            f.write(text)
            written += len(text)
    return reports


def run(args: list[str]) -> tuple[float, float, int]:
    """(wall seconds, peak RSS MiB, output lines) of one command."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "memcgctl", *args], stdout=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None
    lines = sum(1 for _ in proc.stdout)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"memcgctl {' '.join(args)}: exit {os.waitstatus_to_exitcode(status)}")
    return wall, usage.ru_maxrss / 1024, lines


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    opts = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mb in (max(opts.mb // 10, 1), opts.mb):
            log = Path(tmp) / f"kern-{mb}.log"
            reports = generate(log, mb)
            size = log.stat().st_size / 1e6
            for name, args in (
                ("events --from --json-lines", ["events", "--from", str(log), "--json-lines"]),
                ("explain-kill --from --json", ["explain-kill", "--from", str(log), "--json"]),
            ):
                wall, rss, lines = run(args)
                rows.append((f"{size:.0f} MB, {reports} reports", name, wall, rss, lines))
    print(f"{'log':<24} {'command':<28} {'wall s':>7} {'peak RSS MiB':>13} {'out lines':>9}")
    for log_desc, name, wall, rss, lines in rows:
        print(f"{log_desc:<24} {name:<28} {wall:>7.2f} {rss:>13.1f} {lines:>9}")
    worst = max(r[2] for r in rows)
    print(f"\ntarget: under 5 s for 100 MB — worst {worst:.2f} s")
    return 0 if worst < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
