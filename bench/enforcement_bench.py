"""Benchmark: does the policy's victim die first, before the kernel acts (target: in
95 % of episodes; issue 11)?  Run as root: ``python3 bench/enforcement_bench.py [--episodes 20]``.

It boots the cgroup v2 guest (tests/vm/run-in-kernel) and runs itself there: the
host-wide cells exhaust the guest's own RAM, which is allowed only in that throw-away
VM.  For every growth rate × OOM delay, in a memcg and host-wide, it runs N episodes:

* memcg: ``jobs`` (memory.max 256M, the delay) holds ``low/`` (badness 100: a 40 MiB
  process, the policy's victim) and ``high/`` (badness 900: a 120 MiB process, the
  kernel's choice, and a grower);
* host: the same children with no limit; a ballast in ``high/`` takes all but ~200 MB of
  the guest's MemAvailable so that each episode is short.

An episode succeeds when the 40 MiB victim died while the grower still lived and the
kernel's own OOM killer killed nobody (memory.events oom_kill of the domain, /proc/vmstat
oom_kill for the host).  The latency is from the delay's end (the under_oom line plus the
delay; with delay 0, the valve's event) to the victim's death (its pidfd).  Processes
are forked from this script (no interpreter start per episode: the guest is emulated).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realkernel import TestCgroups, v1_memory_mount  # noqa: E402

MIB = 1 << 20
RATES = {"50 MB/s": 0.02, "200 MB/s": 0.005, "unthrottled": 0.0}  # pause per 1 MiB
DELAYS = [0, 300, 1000]


def forked(tc: TestCgroups, cg: str, body: str, mib: int = 0, pause: float = 0.0) -> int:
    """A child of this process in cg: a holder of ``mib`` MiB, or a grower."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            TestCgroups.write(tc.path(cg), "cgroup.procs", str(os.getpid()))
            keep = [b"\x01" * (mib * MIB)] if mib else []
            os.write(w, b"r")
            if body == "grow":
                while True:
                    keep.append(b"\x01" * MIB)
                    if pause:
                        time.sleep(pause)
            while True:
                time.sleep(3600)
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"r"
    os.close(r)
    return pid


def reap(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


class DaemonLines:
    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cv:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cv.notify_all()

    def wait(self, kind: str, start: int, timeout: float) -> tuple[int, float] | None:
        """(index, arrival) of the first ``kind`` line at or after index start."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for i in range(start, len(self.lines)):
                    t, line = self.lines[i]
                    if line.split(" ", 1)[0].endswith(">" + kind):
                        return i, t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cv.wait(left)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def kernel_kills(tc: TestCgroups, domain: str | None) -> int:
    if domain is None:
        text = Path("/proc/vmstat").read_text()
        return int(text.split("\noom_kill ")[1].split()[0])
    text = (tc.path(domain) / "memory.events").read_text()
    return int(text.split("oom_kill ")[1].split()[0])


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def cell(
    tc: TestCgroups,
    host: bool,
    delay_ms: int,
    pause: float,
    n: int,
    log_dir: Path | None = None,
    where: str = "",
) -> dict[str, object]:
    """``where``: the cell's parent below the test parent (``a/b/``; default: the test
    parent itself), e.g. among a node's pods (bench/scale_v2_bench.py)."""
    name = f"{'host' if host else 'memcg'}-{delay_ms}-{pause}"
    top = tc.make(where + name, limit=None if host else 256 * MIB)
    low = tc.make(f"{where}{name}/low", limit=None)
    high = tc.make(f"{where}{name}/high", limit=None)
    name += "-" + where.strip("/").replace("/", "-") if where else ""
    for cg, badness in ((low, "100"), (high, "900")):
        os.setxattr(tc.path(cg), "trusted.memcgctl.badness", badness.encode())
    ballast: list[int] = []
    if host:
        os.setxattr(tc.path(top), "trusted.memcgctl.badness", b"100")
        spare = mem_available() - 300 * MIB  # ~200 MB above the 10 % line after the victim
        while spare > 64 * MIB:
            ballast.append(forked(tc, high, "hold", mib=64))
            spare -= 64 * MIB
        argv_root, extra = "/", ["--host-delay", f"{delay_ms}ms"]
    else:
        os.setxattr(tc.path(top), "trusted.memcgctl.oom_delay_ms", str(delay_ms).encode())
        ballast.append(forked(tc, high, "hold", mib=120))
        argv_root, extra = tc.parent, []
    d = DaemonLines(
        [
            sys.executable,
            "-m",
            "memcgctl",
            "--state-dir",
            f"/run/bench-{name}",
            "daemon",
            "--root",
            argv_root,
            "--rescan",
            "500ms",
            *extra,
        ]
    )
    domain = None if host else top
    ok, latencies, outcomes, late, planned = 0, [], [], [], 0
    # per won planned episode: (deadline -> death, deadline -> signal) in ms, whose
    # difference is the victim's signal -> death (all the bare handler measures), and
    # when it died on the clock of the --logs lines (seconds)
    split: list[tuple[float, float, float]] = []
    exits: list[tuple[str, str]] = []  # kill_path's exit_ms and reaped, per planned kill
    try:
        # a node-sized tree below the root (bench/scale_v2_bench.py) takes longer
        assert d.wait("daemon_took_over", 0, 300) is not None, "daemon did not start"
        seen = len(d.lines)
        for _ in range(n):
            victim = forked(tc, low, "hold", mib=40)
            pidfd = os.pidfd_open(victim)
            before = kernel_kills(tc, domain)
            grower = forked(tc, high, "grow", pause=pause)
            p = select.poll()
            p.register(pidfd, select.POLLIN)
            died = p.poll(120_000)
            t_death, w_death = time.monotonic(), time.time()
            grower_alive = os.waitpid(grower, os.WNOHANG) == (0, 0)
            reap(grower)
            reap(victim)
            os.close(pidfd)
            under = d.wait("under_oom", seen, 5)
            kill = d.wait("daemon_kill", seen, 5)
            signalled = None
            if kill is not None:
                text = d.lines[kill[0]][1]
                signalled = float(text.split(" late_ms=")[1].split()[0])
                late.append(signalled)
                planned += " plan_age_ms=" in text
            good = bool(died) and grower_alive and kernel_kills(tc, domain) == before
            outcomes.append(
                "ok" if good else ("kernel" if kernel_kills(tc, domain) != before else "lost")
            )
            if good and under is not None:
                ok += 1
                stamped = d.lines[under[0]][1].split(" time=")
                if len(stamped) > 1:  # a standing plan: the signal went before the line,
                    # which carries the episode's start (wall clock, same guest)
                    start = datetime.fromisoformat(stamped[1].split()[0].replace("Z", "+00:00"))
                    latencies.append((w_death - start.timestamp()) * 1000 - delay_ms)
                    if signalled is not None:  # (+ when, on the logs' clock)
                        split.append((round(latencies[-1], 2), signalled, round(t_death, 4)))
                else:
                    latencies.append((t_death - under[1]) * 1000 - delay_ms)
            resolved = d.wait("oom_resolved", seen, 30)
            upto = (resolved[0] + 1) if resolved else len(d.lines)
            for _, line in d.lines[seen:upto]:  # the daemon's own view of the exit
                if line.split(" ", 1)[0].endswith(">kill_path"):
                    fields = dict(f.split("=", 1) for f in line.split()[2:] if "=" in f)
                    exits.append((fields.get("exit_ms", "-"), fields.get("reaped", "-")))
            seen = upto
    finally:
        d.stop()
        if log_dir is not None:
            # each line with when it arrived (this script's monotonic clock, seconds)
            text = "".join(f"{t:.4f} {line}\n" for t, line in d.lines)
            (log_dir / f"daemon-{name}.log").write_text(text)
        for pid in ballast:
            reap(pid)
        for attr in ("trusted.memcgctl.oom_delay_ms", "trusted.memcgctl.badness"):
            with contextlib.suppress(OSError):
                os.removexattr(tc.path(top), attr)
    lat = sorted(latencies)
    late.sort()
    after = sorted(death - sig for death, sig, _ in split)
    return {
        "domain": "host" if host else "memcg",
        "delay_ms": delay_ms,
        "rate": next(k for k, v in RATES.items() if v == pause),
        "episodes": n,
        "ok": ok,
        "share": ok / n,
        "p50_ms": statistics.median(lat) if lat else None,
        "p99_ms": p99(lat),
        "late_p50_ms": statistics.median(late) if late else None,
        "late_p99_ms": p99(late),
        "planned": planned,  # kills whose victim was chosen ahead (plan_age_ms)
        # the planned won episodes' signal -> death (to death minus late_ms), and each
        # such episode's [to death, late_ms, the death on the --logs lines' clock]
        "after_p50_ms": statistics.median(after) if after else None,
        "split_ms": split,
        "exits": exits,
        "outcomes": outcomes,
    }


def bare_cell(tc: TestCgroups, pause: float, n: int) -> dict[str, object]:
    """The floor, for the ratio: a bare Python handler with memory.high set by hand,
    that SIGKILLs a known pid at the first ``high`` event (delay 0)."""
    top = tc.make(f"bare-{pause}", limit=256 * MIB)
    low = tc.make(f"bare-{pause}/low", limit=None)
    high = tc.make(f"bare-{pause}/high", limit=None)
    TestCgroups.write(tc.path(top), "memory.high", str(230 * MIB))
    ballast = forked(tc, high, "hold", mib=120)
    lat: list[float] = []
    try:
        for _ in range(n):
            victim = forked(tc, low, "hold", mib=40)
            fd = os.open(tc.path(top) / "memory.events", os.O_RDONLY)
            first = os.read(fd, 4096)
            pidfd = os.pidfd_open(victim)
            grower = forked(tc, high, "grow", pause=pause)
            p = select.poll()
            p.register(fd, select.POLLPRI)
            while True:
                p.poll(60_000)
                os.lseek(fd, 0, os.SEEK_SET)
                now = os.read(fd, 4096)
                if now != first:
                    break
            t0 = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            select.select([pidfd], [], [], 30)
            lat.append((time.monotonic() - t0) * 1000)
            os.close(pidfd)
            os.close(fd)
            reap(grower)
            reap(victim)
    finally:
        reap(ballast)
    lat.sort()
    rate = next(k for k, v in RATES.items() if v == pause)
    return {
        "domain": "bare",
        "rate": rate,
        "p50_ms": statistics.median(lat),
        "p99_ms": p99(lat),
        "lat_ms": [round(x, 2) for x in lat],  # each episode's signal -> death
    }


def p99(values: list[float]) -> float | None:
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else None


def in_guest(args: argparse.Namespace) -> int:
    mount = v1_memory_mount()
    assert mount is not None and (mount / "cgroup.controllers").exists(), "needs cgroup v2"
    tc = TestCgroups(mount)
    TestCgroups.write(tc.path(tc.parent), "memory.max", "max")  # the guest is the host here
    rows = []
    bare = []
    try:
        if args.only in (None, "memcg") and not args.no_bare:
            for pause in RATES.values():
                bare.append(bare_cell(tc, pause, args.episodes))
                print(json.dumps(bare[-1]), file=sys.stderr, flush=True)
        for host in (False, True) if not args.bare_only else ():
            if args.only and args.only != ("host" if host else "memcg"):
                continue
            for delay in args.delays or DELAYS:
                for pause in RATES.values():
                    if args.rate and RATES[args.rate] != pause:
                        continue
                    rows.append(cell(tc, host, delay, pause, args.episodes, args.logs))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        tc.cleanup()
    kernel = os.uname().release
    print(f"enforcement, cgroup v2 guest kernel {kernel}, {args.episodes} episodes per cell")
    print("victim first: the policy's victim died while the grower lived, no kernel kill")
    print("to SIGKILL: the daemon's deadline (delay end) to its signal (its own clock)")
    print(
        "to death: the deadline (under_oom line + delay; with a standing plan, the "
        "episode's start that line carries) to the victim's pidfd"
    )
    print("planned: kills whose victim had been chosen ahead (daemon_kill plan_age_ms)")
    print(
        f"{'domain':7} {'delay':>6} {'growth':>12} {'victim first':>13} "
        f"{'to SIGKILL p50/p99':>20} {'to death p50/p99':>18} {'planned':>8}"
    )
    for r in rows:
        share = f"{r['ok']}/{r['episodes']} {100 * float(str(r['share'])):.0f}%"
        print(
            f"{r['domain']:7} {str(r['delay_ms']) + 'ms':>6} {r['rate']:>12} {share:>13} "
            f"{ms(r['late_p50_ms']) + ' / ' + ms(r['late_p99_ms']):>20} "
            f"{ms(r['p50_ms']) + ' / ' + ms(r['p99_ms']):>18} {r['planned']:>8}"
        )
    for b in bare:
        print(
            f"bare handler (memory.high set by hand, first high event -> SIGKILL -> pidfd, "
            f"{b['rate']}): p50 {ms(b['p50_ms'])}, p99 {ms(b['p99_ms'])}"
        )
    return 0


def ms(value: object) -> str:
    return f"{float(str(value)):.0f}ms" if value is not None else "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--only", choices=["memcg", "host"])
    ap.add_argument("--delays", type=int, nargs="*", help="delays in ms (default 0 300 1000)")
    ap.add_argument("--rate", choices=list(RATES), help="one growth rate only")
    ap.add_argument("--logs", type=Path, help="keep each cell's daemon log in this directory")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare-handler floor")
    ap.add_argument("--bare-only", action="store_true", help="only the bare-handler floor")
    args = ap.parse_args()
    return in_guest(args) if os.environ.get("MEMCGCTL_IN_VM") else rerun_in_guest()


def rerun_in_guest() -> int:
    """Boot the v2 guest and run this script's command line there (MEMCGCTL_IN_VM=1)."""
    if os.geteuid() != 0:
        print("needs root (it boots the cgroup v2 guest)", file=sys.stderr)
        return 2
    argv = [str(ROOT / "tests" / "vm" / "run-in-kernel"), sys.executable, *sys.argv]
    return subprocess.run(
        argv, cwd=ROOT, env={**os.environ, "MEMCGCTL_IN_VM": "1"}, check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
