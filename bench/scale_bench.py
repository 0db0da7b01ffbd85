"""Benchmark: a Kubernetes node's scale (issue 22) — commands and the daemon's reaction
with ~5,000 cgroups and ~2,000 sleeping processes present.

Run as root on a host with the v1 memory controller: ``python3 bench/scale_bench.py``.
Everything lives under one test parent (tests/realkernel.py, 256 MiB), removed at the
end.  The node-like tree: ``kubepods/{guaranteed,burstable,besteffort}/pod<N>`` with 4
containers each and 2 cgroups inside each container (the pause and app scopes), plus
``system.slice`` with services; a memory limit on every pod.  The sleeping processes are
children of one small C program (compiled here with ``cc``; ``busybox sleep`` without a
compiler) that forks and moves each child into a container (~40 KiB each, so 2,000 fit
in the test parent's limit).

Measured, in one run:

* commands over the whole hierarchy (``tree``, ``predict-victim /``, ``counters
  --json``, ``ps``) against ``systemd-cgls --no-pager memory:/`` and ``find … -name
  memory.limit_in_bytes | xargs cat`` over the same tree (best of N);
* the daemon's reaction (delay 0: from the kernel's OOM eventfd to the victim's death,
  measured with our own eventfd and a pidfd), p50 and p99, for a managed memcg outside
  the tree, a pod inside it, and the pods' root (``kubepods``) as the OOM domain (the
  grower in a badness-0 cgroup, then in one without a badness among the pods) — each
  against the same measurement before the tree was built (an empty hierarchy).  A
  grower killed by the kernel (an unmanaged ancestor ran out first) stops the bench.
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.nodetree import build_system, build_tree, start_sleepers  # noqa: E402
from tests.realkernel import HELPERS, MAX_TEST_LIMIT, TestCgroups, v1_memory_mount  # noqa: E402


def best_of(argv: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    times = []
    for _ in range(runs):
        t0 = time.monotonic()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.monotonic() - t0)
    return min(times)


def memcgctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "memcgctl", *args]


# -- reaction ---------------------------------------------------------------------------


def oom_eventfd(tc: TestCgroups, cg: str) -> tuple[int, int]:
    ctl = os.open(tc.path(cg) / "memory.oom_control", os.O_RDONLY)
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    TestCgroups.write(tc.path(cg), "cgroup.event_control", f"{efd} {ctl}")
    return efd, ctl


def kernel_kills(tc: TestCgroups, cg: str) -> int:
    """The kernel's OOM kills of tasks in cg (v1 ``oom_kill``, local)."""
    text = (tc.path(cg) / "memory.oom_control").read_text()
    return dict((k, int(v)) for k, v in (line.split() for line in text.splitlines()))["oom_kill"]


def usage(tc: TestCgroups, cg: str) -> int:
    return int((tc.path(cg) / "memory.usage_in_bytes").read_text())


def one_oom(tc: TestCgroups, domain: str, victim_cg: str) -> float:
    """Seconds from the kernel's OOM notification on ``domain`` to the grower's death.
    The daemon must have killed it: a kill by the kernel (an OOM of an unmanaged
    ancestor that ran out first) is not a measurement of the daemon."""
    efd, ctl = oom_eventfd(tc, domain)
    before = kernel_kills(tc, victim_cg)
    try:
        g = tc.spawn(victim_cg, [sys.executable, str(HELPERS / "grow.py"), "4096", "512"])
        pidfd = os.pidfd_open(g.pid)
        p = select.poll()
        p.register(efd, select.POLLIN)
        assert p.poll(60_000), f"no OOM notification in {domain}"
        t0 = time.monotonic()
        p2 = select.poll()
        p2.register(pidfd, select.POLLIN)
        assert p2.poll(60_000), "the victim did not die"
        t1 = time.monotonic()
        os.close(pidfd)
        g.wait()
        if kernel_kills(tc, victim_cg) != before:
            raise RuntimeError(f"the kernel killed the grower in {victim_cg}, not the daemon")
        time.sleep(0.6)  # past the daemon's grace: a new episode each time
        return t1 - t0
    finally:
        os.close(efd)
        os.close(ctl)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


class Daemon:
    def __init__(self, tc: TestCgroups, state: Path) -> None:
        self.taken: set[str] = set()
        self.proc = subprocess.Popen(
            [
                *memcgctl("--state-dir", str(state), "daemon", "--root", tc.parent),
                "--rescan",
                "2s",
                "--no-guardian",
            ],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )

    def wait_took_over(self, cg: str) -> None:
        """Read the daemon's lines until it took over cg (remembering the others)."""
        assert self.proc.stderr is not None
        while cg not in self.taken:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError(f"the daemon did not take over {cg}")
            if "daemon_took_over" in line:
                self.taken.add(line.split(" cgroup=", 1)[1].split()[0])

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def reaction(
    tc: TestCgroups, state: Path, cases: dict[str, tuple[str, str]], n: int
) -> dict[str, list[float]]:
    """Per case (OOM domain, victim cgroup): n reaction times with one daemon running."""
    for domain, _ in cases.values():
        os.setxattr(tc.path(domain), "trusted.memcgctl.oom_delay_ms", b"0")
    d = Daemon(tc, state)
    out: dict[str, list[float]] = {}
    try:
        for domain in {domain for domain, _ in cases.values()}:
            d.wait_took_over(domain)
        # the daemon's stderr is no longer read: drain it so it never blocks
        drain = subprocess.Popen(["cat"], stdin=d.proc.stderr, stdout=subprocess.DEVNULL)
        for name, (domain, victim) in cases.items():
            out[name] = [one_oom(tc, domain, victim) for _ in range(n)]
        drain.kill()
    finally:
        d.stop()
        for domain in {domain for domain, _ in cases.values()}:
            os.removexattr(tc.path(domain), "trusted.memcgctl.oom_delay_ms")
    return out


def commands(mount: Path, work: Path, runs: int) -> list[tuple[str, str, str, str]]:
    """The commands over the whole hierarchy against systemd-cgls and find | xargs cat."""
    rows: list[tuple[str, str, str, str]] = []
    cgls = shutil.which("systemd-cgls")
    base_find = best_of(["sh", "-c", f"find {mount} -name memory.limit_in_bytes | xargs cat"], runs)
    base_cgls = best_of([cgls, "--no-pager", "memory:/"], runs) if cgls is not None else None
    base = base_cgls if base_cgls is not None else base_find
    base_name = "systemd-cgls" if base_cgls is not None else "find | xargs cat"
    rows.append(("systemd-cgls --no-pager memory:/", f"{base_cgls or 0:.2f} s", "", ""))
    rows.append(("find -name memory.limit_in_bytes | xargs cat", f"{base_find:.2f} s", "", ""))
    for label, argv in [
        ("tree", memcgctl("--state-dir", str(work / "c"), "tree", "--plain")),
        ("tree --json", memcgctl("--state-dir", str(work / "c"), "tree", "--json")),
        (
            "predict-victim / --json",
            memcgctl("--state-dir", str(work / "c"), "predict-victim", "/", "--json"),
        ),
        ("counters --json", memcgctl("--state-dir", str(work / "c"), "counters", "--json")),
        ("ps --plain", memcgctl("--state-dir", str(work / "c"), "ps", "--plain")),
    ]:
        t = best_of(argv, runs)
        rows.append((f"memcgctl {label}", f"{t:.2f} s", f"{t / base:.1f}× {base_name}", ""))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pods", type=int, default=300)
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--procs", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=3, help="best of N for the commands")
    ap.add_argument("--ooms", type=int, default=10, help="OOMs per reaction case")
    ap.add_argument(
        "--reaction-only", action="store_true", help="measure the reaction, not the commands"
    )
    args = ap.parse_args()
    mount = v1_memory_mount()
    if os.geteuid() != 0 or mount is None or (mount / "cgroup.controllers").exists():
        sys.exit("needs root and the v1 memory controller")
    tc = TestCgroups(mount)
    extra: list[TestCgroups] = []
    work = Path(tempfile.mkdtemp(prefix="memcgctl-scale-"))
    rows: list[tuple[str, str, str, str]] = []
    try:
        solo = tc.make("solo", limit=64 << 20)
        solo_low = tc.make("solo/low", limit=None)
        os.setxattr(tc.path(solo_low), "trusted.memcgctl.badness", b"100")
        empty = reaction(tc, work / "s0", {"outside": (solo, solo_low)}, args.ooms)["outside"]
        t0 = time.monotonic()
        leaves, pods = build_tree(tc, args.pods)
        # a process costs the memcg ~130 KiB (kernel stack, page tables, task): the test
        # parent's 256 MiB holds ~1,500; the services and their processes get a second
        # test parent (the commands read the whole hierarchy either way)
        tc_sys = TestCgroups(mount)
        extra.append(tc_sys)
        services = build_system(tc_sys, args.services)
        in_pods = min(args.procs * 3 // 5, 1300)
        n_procs = start_sleepers(tc, leaves, in_pods, work)
        n_procs += start_sleepers(tc_sys, services, args.procs - in_pods, work)
        n_cgroups = sum(1 for _ in mount.rglob("memory.limit_in_bytes")) - 1
        print(
            f"tree: {n_cgroups} cgroups in the hierarchy, {n_procs} sleeping processes "
            f"(built in {time.monotonic() - t0:.0f} s)",
            flush=True,
        )
        if not args.reaction_only:
            rows += commands(mount, work, args.runs)
        # reaction with the tree present.  The sleepers' kernel memory was charged to
        # the test parent (their forker's memcg: v1 does not move charges), so the
        # domains get what room the parent has left, or the parent would run out
        # first and the kernel, not the daemon, would kill
        room = MAX_TEST_LIMIT - usage(tc, tc.parent) - (16 << 20)
        if room < 32 << 20:
            sys.exit(f"only {room >> 20} MiB left in the test parent: fewer --procs")
        share = min(room, 64 << 20)
        pod = pods[len(pods) // 2]
        TestCgroups.write(tc.path(pod), "memory.limit_in_bytes", str(usage(tc, pod) + share))
        pod_victim = tc.make(pod.split("/", 2)[2] + "/c3/victim", limit=None)
        os.setxattr(tc.path(pod_victim), "trusted.memcgctl.badness", b"1")
        kube = f"{tc.parent}/kubepods"
        TestCgroups.write(tc.path(kube), "memory.limit_in_bytes", str(usage(tc, kube) + share))
        kube_victim = tc.make("kubepods/besteffort/victim", limit=None)
        os.setxattr(tc.path(kube_victim), "trusted.memcgctl.badness", b"0")
        cases = {
            "managed memcg outside the tree": (solo, solo_low),
            "a pod inside the tree": (pod, pod_victim),
        }
        big = reaction(tc, work / "s1", cases, args.ooms)
        # the same domain where the pods have no badness, only their QoS class does
        # (besteffort first, as the kubelet ranks them): the walk ranks the 100 pods of
        # besteffort by usage (the badness-0 cgroup above is empty by then)
        os.setxattr(tc.path(f"{kube}/besteffort"), "trusted.memcgctl.badness", b"100")
        kube_plain = tc.make("kubepods/besteffort/plain", limit=None)
        big.update(
            reaction(
                tc,
                work / "s2",
                {
                    "the pods' root as OOM domain": (kube, kube_victim),
                    "the pods' root, no badness on the pods": (kube, kube_plain),
                },
                args.ooms,
            )
        )
        e50, e99 = pct(empty, 0.5), pct(empty, 0.99)
        rows.append(
            (
                "reaction, empty hierarchy (p50 / p99)",
                f"{e50 * 1000:.0f} / {e99 * 1000:.0f} ms",
                "",
                "",
            )
        )
        for name, values in big.items():
            p50, p99 = pct(values, 0.5), pct(values, 0.99)
            rows.append(
                (
                    f"reaction, {name} (p50 / p99)",
                    f"{p50 * 1000:.0f} / {p99 * 1000:.0f} ms",
                    f"{p50 / e50:.1f}× / {p99 / e99:.1f}× empty",
                    "",
                )
            )
    finally:
        for made in (tc, *extra):
            made.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"{time.strftime('%Y-%m-%d', time.gmtime())}; load average {os.getloadavg()[0]:.1f}\n"
    )
    w = max(len(r[0]) for r in rows)
    print(f"| {'what'.ljust(w)} | time | ratio |")
    print(f"|{'-' * (w + 2)}|------|-------|")
    for what, took, ratio, _ in rows:
        print(f"| {what.ljust(w)} | {took} | {ratio} |")


if __name__ == "__main__":
    main()
