"""Benchmark: time to empty a subtree of N sleepers plus a running fork loop (target: at most
2x writing cgroup.kill by hand where that exists).

    python3 bench/killall_bench.py [--tasks 200] [--repeat 5]

Needs root.  Creates its cgroups with the test suite's TestCgroups (under
memcgctl-test-<pid>-<hex>, removed afterwards) on the v1 memory hierarchy and on the
cgroup2 hierarchy, and compares, each on a fresh subtree:

* ``plain loop``: SIGKILL every pid in cgroup.procs of the subtree, re-list, until empty;
* ``cgroup.kill by hand`` (cgroup2): write 1, poll cgroup.events until ``populated 0``;
* ``memcgctl engine``: the kill machinery alone (Killer.kill_all);
* ``memcgctl kill-all``: the command in-process (CliRunner: parsing, journal included),
  with each mechanism, and once as a subprocess (interpreter start-up included).

Prints medians and the ratios memcgctl / baseline (target: <= 2x).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from click.testing import CliRunner  # noqa: E402

from memcgctl.actions.kill import Killer  # noqa: E402
from memcgctl.actions.signaller import PidfdSignaller  # noqa: E402
from memcgctl.cli import cli  # noqa: E402
from memcgctl.kernel.cgroupfs import CgroupFs  # noqa: E402
from memcgctl.kernel.hierarchy import hierarchy_at  # noqa: E402
from memcgctl.kernel.procfs import ProcFs  # noqa: E402
from memcgctl.vocab.cgpath import CgroupPath  # noqa: E402
from tests.realkernel import TestCgroups, unified_mount, v1_memory_mount  # noqa: E402

SHELLS = 4


def populate(tc: TestCgroups, run: str, tasks: int) -> str:
    top = tc.make(run, limit=128 << 20)
    per = tasks // SHELLS
    for i in range(SHELLS):
        cg = tc.make(f"{run}/s{i}" if i % 2 == 0 else f"{run}/s0/n{i}", limit=64 << 20)
        tc.spawn(
            cg,
            [
                "/bin/sh",
                "-c",
                f"for i in $(seq {per - 1}); do sleep 3600 & done; echo ready; exec sleep 3600",
            ],
        )
    tc.spawn(
        tc.make(f"{run}/loop", limit=64 << 20),
        ["/bin/sh", "-c", "echo ready; while :; do /bin/true; done"],
    )
    deadline = time.monotonic() + 10
    while len(tc.subtree_pids(top)) < tasks and time.monotonic() < deadline:
        time.sleep(0.01)
    return top


def listing(tc: TestCgroups, top: str) -> list[int]:
    out: list[int] = []
    for d in [tc.path(top), *tc.path(top).rglob("*")]:
        if d.is_dir():
            with contextlib.suppress(OSError):
                out += [int(x) for x in (d / "cgroup.procs").read_text().split()]
    return out


def plain_loop(tc: TestCgroups, top: str) -> None:
    while True:
        pids = listing(tc, top)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def cgroup_kill_by_hand(tc: TestCgroups, top: str) -> None:
    d = tc.path(top)
    TestCgroups.write(d, "cgroup.kill", "1")
    fd = os.open(d / "cgroup.events", os.O_RDONLY)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        while True:
            os.lseek(fd, 0, os.SEEK_SET)
            if b"populated 0" in os.read(fd, 4096):
                return
            poller.poll(1000)
    finally:
        os.close(fd)


def memcgctl_inproc(mechanism: str) -> Callable[[TestCgroups, str], None]:
    def run(tc: TestCgroups, top: str) -> None:
        with tempfile.TemporaryDirectory() as state:
            env = {"MEMCGCTL_STATE_DIR": state, "MEMCGCTL_CGROUP_ROOT": str(tc.mount)}
            r = CliRunner().invoke(
                cli, ["kill-all", top, "--mechanism", mechanism, "--json"], env=env
            )
            assert r.exit_code == 0, r.output

    return run


def memcgctl_engine(tc: TestCgroups, top: str) -> None:
    """The kill machinery alone (no CLI parsing, JSON output or journal)."""
    killer = Killer(CgroupFs(hierarchy_at(tc.mount)), ProcFs(Path("/proc")), PidfdSignaller())
    assert killer.kill_all(CgroupPath(top)).empty


def memcgctl_subprocess(tc: TestCgroups, top: str) -> None:
    with tempfile.TemporaryDirectory() as state:
        env = dict(os.environ, MEMCGCTL_STATE_DIR=state, MEMCGCTL_CGROUP_ROOT=str(tc.mount))
        subprocess.run(
            [sys.executable, "-m", "memcgctl", "kill-all", top],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )


def measure(
    tc: TestCgroups, name: str, fn: Callable[[TestCgroups, str], None], tasks: int, repeat: int
) -> float:
    times = []
    for i in range(repeat):
        top = populate(tc, f"{name.replace(' ', '_').replace('.', '_')}{i}", tasks)
        n = len(tc.subtree_pids(top))
        t0 = time.perf_counter()
        fn(tc, top)
        elapsed = time.perf_counter() - t0
        assert not listing(tc, top), f"{name}: subtree not empty"
        times.append(elapsed)
        for p in tc.procs:  # reap our zombies
            with contextlib.suppress(Exception):
                p.wait(timeout=0)
    med = statistics.median(times)
    print(f"  {name:<34} {med * 1000:8.1f} ms  (median of {repeat}, {n} tasks + fork loop)")
    return med


def bench_hierarchy(
    label: str,
    mount: Path,
    methods: list[tuple[str, Callable[[TestCgroups, str], None]]],
    args: argparse.Namespace,
) -> dict[str, float]:
    print(f"{label}: {mount}")
    tc = TestCgroups(mount)
    try:
        return {name: measure(tc, name, fn, args.tasks, args.repeat) for name, fn in methods}
    finally:
        tc.cleanup()


def ratio(results: dict[str, float], a: str, b: str) -> None:
    if a in results and b in results:
        r = results[a] / results[b]
        verdict = "ok" if r <= 2 else "OVER 2x"
        print(f"  ratio {a} / {b}: {r:.2f}x  [{verdict}]")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (creates test cgroups)", file=sys.stderr)
        return 2

    v1 = v1_memory_mount()
    if v1 is not None:
        res = bench_hierarchy(
            "memory hierarchy",
            v1,
            [
                ("plain SIGKILL loop", plain_loop),
                ("memcgctl kill-all (auto)", memcgctl_inproc("auto")),
                ("memcgctl engine (auto)", memcgctl_engine),
                ("memcgctl kill-all, subprocess", memcgctl_subprocess),
            ],
            args,
        )
        ratio(res, "memcgctl kill-all (auto)", "plain SIGKILL loop")
        ratio(res, "memcgctl engine (auto)", "plain SIGKILL loop")
        ratio(res, "memcgctl kill-all, subprocess", "plain SIGKILL loop")

    v2 = unified_mount()
    if v2 is not None:
        res = bench_hierarchy(
            "cgroup2 hierarchy",
            v2,
            [
                ("plain SIGKILL loop", plain_loop),
                ("cgroup.kill by hand", cgroup_kill_by_hand),
                ("memcgctl kill-all (auto)", memcgctl_inproc("auto")),
                ("memcgctl engine (auto)", memcgctl_engine),
                ("memcgctl kill-all (freeze)", memcgctl_inproc("freeze")),
                ("memcgctl kill-all (procs)", memcgctl_inproc("procs")),
                ("memcgctl kill-all, subprocess", memcgctl_subprocess),
            ],
            args,
        )
        for name in (
            "memcgctl kill-all (auto)",
            "memcgctl engine (auto)",
            "memcgctl kill-all (freeze)",
            "memcgctl kill-all (procs)",
            "memcgctl kill-all, subprocess",
        ):
            ratio(res, name, "cgroup.kill by hand")
        ratio(res, "memcgctl kill-all (procs)", "plain SIGKILL loop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
