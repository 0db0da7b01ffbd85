"""Benchmark: memcgctl's host mode against earlyoom and nohang, host-wide, in one guest run.

Run as root: ``python3 bench/peer_bench.py [--rounds 5] [--idle 20]``.  It boots the
cgroup v2 guest (tests/vm/run-in-kernel) and runs itself there: the episodes exhaust the
guest's own RAM, which is allowed only in that throw-away VM.  It installs nothing: a peer
that is not on the PATH (Debian packages ``earlyoom``, ``nohang``) is skipped.

The workload of issue 22: ``important`` (a 350 MiB process, the one the kernel would pick)
and ``batch``, growing at low priority, 1 MiB every 5 ms or 16 MiB at a time; a tmpfs
ballast (memory no process owns, so no handler can free it) leaves ~200 MiB above the
10 % line.  Every handler is told the same thing: act below 10 % MemAvailable, kill
``batch``, spare ``important``:

* memcgctl: ``daemon --root / --host-delay 0`` (and its guardian), ``batch``'s cgroup
  badness 100, ``important``'s 900;
* earlyoom: ``-m 10,5 -r 0 --prefer ^batch$ --avoid ^important$``;
* nohang: its packaged config with the soft/hard lines at 10 %/5 % and badness
  adjustments +1000 for ``^batch$``, -1000 for ``^important$``.

Per round, each rate, the handlers take turns (each started afresh for its episode).
Threshold -> death: ``batch`` notes the moment MemAvailable first fell below 10 % of
MemTotal (it reads /proc/meminfo after every allocation), the script the moment a pidfd
reported a death.  Kernel OOM kills: /proc/vmstat ``oom_kill``.  Idle CPU: utime + stime of
the handler's processes over ``--idle`` seconds, on the empty guest and with the ballast
holding 69 % of MemTotal.  Resident memory: RssAnon + RssFile (and Pss) of those processes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.realkernel import TestCgroups, v1_memory_mount  # noqa: E402

MIB = 1 << 20
RATES = {"1 MiB/5 ms": (1, 0.005), "16 MiB chunks": (16, 0.0)}  # (MiB per step, pause)
IMPORTANT_MIB = 350
ROOM_MIB = 200  # above the 10 % line once important and the ballast are in
BALLAST = Path("/run/peer-bench-ballast/file")  # on a tmpfs of its own, mounted in the guest
TICK = os.sysconf("SC_CLK_TCK")
NOTIFY: list[socket.socket] = []  # memcgctl-unit's notify socket, open while the bench runs
SETTLE_S = 10.0  # after a handler is ready, before idle sampling (guardian start-up)


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0]) * 1024
    return out


def vmstat_oom_kills() -> int:
    return int(Path("/proc/vmstat").read_text().split("\noom_kill ")[1].split()[0])


def set_ballast(mib: int) -> None:
    """A tmpfs file of mib MiB: memory that is neither available nor any process's."""
    with open(BALLAST, "wb") as f:
        chunk = b"\x01" * MIB
        for _ in range(max(mib, 0)):
            f.write(chunk)


def drop_ballast() -> None:
    with contextlib.suppress(FileNotFoundError):
        BALLAST.unlink()


def forked(
    cg: Path, comm: str, hold_mib: int, step_mib: int = 0, pause: float = 0.0
) -> tuple[int, int]:
    """A child in cg named comm holding hold_mib, then growing by step_mib (0: never);
    (pid, read end): a grower writes there the monotonic time MemAvailable first fell
    below 10 % of MemTotal."""
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            os.close(ready_r)
            (cg / "cgroup.procs").write_text(str(os.getpid()))
            Path("/proc/self/comm").write_text(comm)
            keep = [b"\x01" * (hold_mib * MIB)] if hold_mib else []
            os.write(ready_w, b"r")
            line = meminfo()["MemTotal"] // 10
            noted = False
            while step_mib:
                keep.append(b"\x01" * (step_mib * MIB))
                if not noted:
                    with open("/proc/meminfo", "rb") as f:
                        text = f.read()
                    avail = int(text.split(b"MemAvailable:")[1].split()[0]) * 1024
                    if avail < line:
                        os.write(w, f"{time.monotonic()}\n".encode())
                        noted = True
                if pause:
                    time.sleep(pause)
            while True:
                time.sleep(3600)
        finally:
            os._exit(0)
    os.close(w)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"r"
    os.close(ready_r)
    return pid, r


def reap(pid: int) -> int | None:
    """Kill and reap; the wait status when it had already died, else None."""
    with contextlib.suppress(ChildProcessError):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
    return None


class Handler:
    """A handler process, its output followed by a thread."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        ready: str,
        cwd: Path = ROOT,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        # PYTHONUNBUFFERED: nohang's start line
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        if cwd != ROOT:  # another checkout's memcgctl (--checkout)
            env["PYTHONPATH"] = str(cwd)
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
        )
        self.lines: list[str] = []
        self.arrived: list[float] = []  # monotonic time each line arrived
        self.cv = threading.Condition()
        self.ready_text = ready
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append(line.rstrip("\n"))
                self.arrived.append(time.monotonic())
                self.cv.notify_all()

    def ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with self.cv:
            while not any(self.ready_text in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    tail = "\n".join(self.lines[-10:])
                    raise RuntimeError(f"{self.name} not ready:\n{tail}")
                self.cv.wait(min(left, 1))

    def pids(self) -> list[int]:
        """The handler and its children (memcgctl: the guardian)."""
        out = [self.proc.pid]
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                out.append(int(d.name))
        return out

    def stop(self) -> None:
        kids = self.pids()[1:]
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in kids:  # the guardian execs the release and exits by itself
            for _ in range(300):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)


def cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def wakeups(pids: list[int]) -> int:
    """Voluntary context switches of every thread: how often they went to sleep."""
    total = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
    return total


def resident(pids: list[int]) -> tuple[float, float]:
    """(RssAnon + RssFile, Pss) in MiB, summed over pids."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(("RssAnon:", "RssFile:")):
                    rss += int(line.split()[1])
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss / 1024, pss / 1024


def anon_mib(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Peer:
    name: str
    start: Callable[[], Handler]
    times: dict[str, list[float]] = field(default_factory=dict)
    outcomes: dict[str, list[str]] = field(default_factory=dict)
    idle: dict[str, float] = field(default_factory=dict)
    wakes: dict[str, float] = field(default_factory=dict)
    # per process (memcgctl: the daemon, then its guardian): [(CPU %, wake-ups/s)]
    idle_each: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    rss: tuple[float, float] = (0.0, 0.0)
    rss_each: list[tuple[float, float]] = field(default_factory=list)  # handler, children


def drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed at the end of the bench
        while sock.recv(4096):
            pass


def peers(tmp: Path, checkouts: list[Path] | None = None, unit: bool = False) -> list[Peer]:
    def memcgctl(cwd: Path = ROOT, unit: bool = False) -> Callable[[], Handler]:
        def start() -> Handler:
            argv = [sys.executable, "-m", "memcgctl", "--state-dir", str(tmp / "state")]
            argv += ["daemon", "--root", "/", "--host-delay", "0", "--host-short", "10%"]
            argv += ["--host-critical", "5%"]
            if not unit:
                return Handler("memcgctl", argv, "daemon_took_over", cwd=cwd)
            # as install-unit's unit starts it: this script plays systemd's notify
            # socket and watchdog, so there is no guardian process
            sock = tmp / "notify"
            if not sock.exists():
                NOTIFY.append(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
                NOTIFY[-1].bind(str(sock))
                # read what the daemon sends, as systemd does: unread, the socket's
                # queue fills (a few datagrams) and the daemon blocks in sendto, which
                # measured 0 % CPU "idle" and left it deaf to SIGTERM
                threading.Thread(target=drain, args=(NOTIFY[-1],), daemon=True).start()
            env = {"NOTIFY_SOCKET": str(sock), "WATCHDOG_USEC": "10000000"}
            argv.append("--guardian=systemd")
            return Handler("memcgctl", argv, "daemon_took_over", cwd=cwd, extra_env=env)

        return start

    out = [Peer("memcgctl", memcgctl())]
    if unit:
        out.append(Peer("memcgctl-unit", memcgctl(unit=True)))
    for co in checkouts or []:  # older (or other) versions side by side
        out.append(Peer(f"memcgctl@{co.name}", memcgctl(co.resolve())))
    earlyoom = shutil.which("earlyoom")
    if earlyoom is not None:
        argv = [earlyoom, "-m", "10,5", "-r", "0", "--prefer", "^batch$", "--avoid", "^important$"]
        eo = argv
        out.append(Peer("earlyoom", lambda: Handler("earlyoom", eo, "SIGKILL when")))
    else:
        print("skip earlyoom: not installed (Debian package earlyoom)", file=sys.stderr)
    nohang = shutil.which("nohang")
    conf = Path("/etc/nohang/nohang.conf")
    if nohang is not None and conf.exists():
        text = conf.read_text()
        text = re.sub(r"(?m)^soft_threshold_min_mem\s*=.*$", "soft_threshold_min_mem = 10 %", text)
        text = re.sub(r"(?m)^hard_threshold_min_mem\s*=.*$", "hard_threshold_min_mem = 5 %", text)
        text += (
            "\n@BADNESS_ADJ_RE_NAME 1000 /// ^batch$\n@BADNESS_ADJ_RE_NAME -1000 /// ^important$\n"
        )
        (tmp / "nohang.conf").write_text(text)
        argv = [nohang, "--monitor", "-c", str(tmp / "nohang.conf")]
        nh = argv
        out.append(Peer("nohang", lambda: Handler("nohang", nh, "Monitoring has started")))
    else:
        print("skip nohang: not installed (Debian package nohang)", file=sys.stderr)
    return out


def wait_memory_back(target: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while meminfo()["MemAvailable"] < target and time.monotonic() < deadline:
        time.sleep(0.2)


def episode(
    peer: Peer, rate: str, cgs: dict[str, Path], base_avail: int
) -> tuple[str, float | None, str]:
    step, pause = RATES[rate]
    h = peer.start()
    imp = batch = -1
    fds: list[int] = []
    try:
        h.ready()
        imp, imp_r = forked(cgs["important"], "important", IMPORTANT_MIB)
        os.close(imp_r)
        spare = meminfo()["MemAvailable"] - meminfo()["MemTotal"] // 10 - ROOM_MIB * MIB
        set_ballast(spare // MIB)
        before = vmstat_oom_kills()
        batch, note_r = forked(cgs["batch"], "batch", 0, step, pause)
        fds = [os.pidfd_open(batch), os.pidfd_open(imp)]
        p = select.poll()
        for fd in fds:
            p.register(fd, select.POLLIN)
        ready = p.poll(120_000)
        t_death = time.monotonic()
        noted = b""
        while select.select([note_r], [], [], 0)[0]:
            chunk = os.read(note_r, 64)
            if not chunk:
                break
            noted += chunk
        os.close(note_r)
        batch_status = reap(batch)
        imp_status = reap(imp)
        batch = imp = -1
        kernel = vmstat_oom_kills() - before
        dead = [
            n
            for n, s in (("batch", batch_status), ("important", imp_status))
            if s is not None and os.WIFSIGNALED(s)
        ]
        who = "+".join(dead) or ("none" if ready else "timeout")
        if kernel:
            who += f" (kernel kills {kernel})"
        t_line = float(noted.split()[0]) if noted.strip() else None
        took = (t_death - t_line) * 1000 if t_line is not None and ready else None
        detail = ""
        if t_line is not None:  # memcgctl says when it noticed (under_oom) and chose
            time.sleep(0.5)
            for t, line in zip(h.arrived, h.lines, strict=False):
                if ">under_oom " in line:
                    detail += f" under_oom line +{(t - t_line) * 1000:.0f}ms"
                    break
            for line in h.lines:
                if ">daemon_kill " in line and " late_ms=" in line:
                    detail += f" late_ms {line.split(' late_ms=')[1].split()[0]}"
        return who, took, detail
    finally:
        for fd in fds:
            os.close(fd)
        for pid in (batch, imp):
            if pid > 0:
                reap(pid)
        drop_ballast()
        h.stop()
        wait_memory_back(base_avail - 32 * MIB)


def idle_cpu(peer: Peer, seconds: float, used_share: float | None) -> tuple[float, float]:
    """CPU share (%) and wake-ups/s of the handler's processes over seconds, the guest
    idle; with used_share, a ballast first makes MemTotal - MemAvailable that share of
    MemTotal.  Each process's own share lands in peer.idle_each."""
    if used_share is not None:
        m = meminfo()
        want_avail = int(m["MemTotal"] * (1 - used_share))
        set_ballast((m["MemAvailable"] - want_avail) // MIB)
    h = peer.start()
    try:
        h.ready()
        time.sleep(SETTLE_S)  # memcgctl's guardian starts the full CLI: not idle yet
        pids = h.pids()
        t0 = time.monotonic()
        c0, w0 = [cpu_ticks([p]) for p in pids], [wakeups([p]) for p in pids]
        time.sleep(seconds)
        took = time.monotonic() - t0
        c1, w1 = [cpu_ticks([p]) for p in pids], [wakeups([p]) for p in pids]
        each = [
            ((c1[i] - c0[i]) / TICK / took * 100, (w1[i] - w0[i]) / took) for i in range(len(pids))
        ]
        peer.idle_each["empty" if used_share is None else "69 % used"] = each
        share, rate = sum(c for c, _ in each), sum(w for _, w in each)
        if used_share is None:
            peer.rss = resident(pids)
            peer.rss_each = [resident([pid]) for pid in pids]
            # RssFile follows the guest's page cache (fault-around maps what is cached):
            # RssAnon alone is what the handler itself holds
            print(f"{peer.name}: RssAnon MiB {[anon_mib(pid) for pid in pids]}", file=sys.stderr)
        return share, rate
    finally:
        h.stop()
        drop_ballast()


def in_guest(args: argparse.Namespace) -> int:
    mount = v1_memory_mount()
    assert mount is not None and (mount / "cgroup.controllers").exists(), "needs cgroup v2"
    tc = TestCgroups(mount)
    TestCgroups.write(tc.path(tc.parent), "memory.max", "max")  # the guest is the host here
    tmp = Path(tempfile.mkdtemp(prefix="peer-bench-", dir="/run"))
    BALLAST.parent.mkdir(exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4g", "tmpfs", str(BALLAST.parent)], check=True
    )
    cgs = {}
    for name, badness in (("batch", b"100"), ("important", b"900")):
        cg = tc.make(name, limit=None)
        os.setxattr(tc.path(cg), "trusted.memcgctl.badness", badness)
        cgs[name] = tc.path(cg)
    found = peers(tmp, args.checkout, args.unit)
    ps = [p for p in found if not args.only or p.name in args.only]
    base_avail = meminfo()["MemAvailable"]
    try:
        for p in ps if not args.no_idle else []:
            p.idle["empty"], p.wakes["empty"] = idle_cpu(p, args.idle, None)
            p.idle["69 % used"], p.wakes["69 % used"] = idle_cpu(p, args.idle, 0.69)
            print(
                f"{p.name}: idle {p.idle} {p.wakes}/s, each {p.idle_each}, resident {p.rss}",
                file=sys.stderr,
                flush=True,
            )
        for rnd in range(args.rounds):
            for rate in RATES:
                order = ps if rnd % 2 == 0 else list(reversed(ps))
                for p in order:
                    who, took, detail = episode(p, rate, cgs, base_avail)
                    p.outcomes.setdefault(rate, []).append(who)
                    p.times.setdefault(rate, []).append(took if took is not None else float("nan"))
                    print(
                        f"round {rnd} {rate} {p.name}: {who} {took}{detail}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        drop_ballast()
        subprocess.run(["umount", str(BALLAST.parent)], check=False)
        tc.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    report(ps, args)
    return 0


def fmt(v: float | None, unit: str = "", digits: int = 0) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.{digits}f}{unit}"


def paired_ratio(a: list[float], b: list[float]) -> float | None:
    ratios = [x / y for x, y in zip(a, b, strict=False) if x == x and y == y and y > 0]
    return statistics.median(ratios) if ratios else None


def report(ps: list[Peer], args: argparse.Namespace) -> None:
    ref = next((p for p in ps if p.name == "earlyoom"), None)
    mem = meminfo()["MemTotal"] // MIB
    print(
        f"peers, host-wide, cgroup v2 guest kernel {os.uname().release}, {mem} MiB, "
        f"{os.cpu_count()} vCPU, {time.strftime('%Y-%m-%d')}; {args.rounds} rounds"
    )
    print("threshold -> death: MemAvailable below 10 % (noted by batch) to the first death")
    print(f"{'handler':9} {'rate':14} {'killed':28} {'p50':>7} {'max':>7} {'vs earlyoom':>11}")
    for p in ps:
        for rate, times in p.times.items():
            good = sorted(t for t in times if t == t)
            counts: dict[str, int] = {}
            for o in p.outcomes[rate]:
                counts[o] = counts.get(o, 0) + 1
            killed = ", ".join(f"{k} {v}/{len(times)}" for k, v in sorted(counts.items()))
            ratio = paired_ratio(times, ref.times.get(rate, [])) if ref is not None else None
            print(
                f"{p.name:9} {rate:14} {killed:28} "
                f"{fmt(statistics.median(good) if good else None, 'ms'):>7} "
                f"{fmt(good[-1] if good else None, 'ms'):>7} {fmt(ratio, 'x', 2):>11}"
            )
    print(f"idle CPU over {args.idle:.0f} s, resident memory (all the handler's processes)")
    print(
        f"{'handler':9} {'CPU empty':>10} {'vs eo':>6} {'CPU 69 %':>10} {'vs eo':>6} "
        f"{'wakeups/s':>10} {'RSS MiB':>8} {'Pss MiB':>8}"
    )
    for p in ps:
        row = f"{p.name:9}"
        for cond in ("empty", "69 % used"):
            v = p.idle.get(cond)
            base = ref.idle.get(cond) if ref is not None else None
            r = v / base if v is not None and base else None
            row += f" {fmt(v, '%', 2):>10} {fmt(r, 'x', 1):>6}"
        wk = "/".join(f"{p.wakes.get(c, 0):.0f}" for c in ("empty", "69 % used"))
        row += f" {wk:>10} {p.rss[0]:8.1f} {p.rss[1]:8.1f}"
        if len(p.rss_each) > 1:  # memcgctl: the daemon, then its guardian
            row += "  (" + " + ".join(f"{r:.1f} ({s:.1f})" for r, s in p.rss_each) + ")"
        print(row)
    if any(len(e) > 1 for p in ps for e in p.idle_each.values()):
        print("per process (the handler, then its children: memcgctl's guardian)")
        print(f"{'handler':9} {'condition':10} {'CPU % each':>22} {'wakeups/s each':>22}")
        for p in ps:
            for cond, each in p.idle_each.items():
                cpu = " + ".join(f"{c:.2f}" for c, _ in each)
                wk = " + ".join(f"{w:.1f}" for _, w in each)
                print(f"{p.name:9} {cond:10} {cpu:>22} {wk:>22}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="episodes per handler and rate")
    ap.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU sampling")
    ap.add_argument("--no-idle", action="store_true", help="episodes only")
    ap.add_argument(
        "--only", action="append", default=[], metavar="HANDLER", help="only this handler"
    )
    ap.add_argument(
        "--unit",
        action="store_true",
        help="also memcgctl-unit: the daemon as install-unit's unit runs it (a notify socket "
        "and $WATCHDOG_USEC, --guardian=systemd: no guardian process)",
    )
    ap.add_argument(
        "--checkout",
        action="append",
        type=Path,
        default=[],
        help="also run the memcgctl of this checkout (e.g. a `git archive` of main)",
    )
    args = ap.parse_args()
    if os.environ.get("MEMCGCTL_IN_VM"):
        return in_guest(args)
    if os.geteuid() != 0:
        print("needs root (it boots the cgroup v2 guest)", file=sys.stderr)
        return 2
    for co in [ROOT, *args.checkout]:  # the .pyc files an install has: a daemon that
        # compiles its own sources keeps ~1 MiB more resident (bench/footprint_bench.py)
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", str(co / "memcgctl")],
            stdout=subprocess.DEVNULL,
            check=True,
        )
    argv = [str(ROOT / "tests" / "vm" / "run-in-kernel"), sys.executable, *sys.argv]
    return subprocess.run(
        argv, cwd=ROOT, env={**os.environ, "MEMCGCTL_IN_VM": "1"}, check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
