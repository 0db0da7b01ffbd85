"""Benchmark: what a delay-0 memcg's standing plan costs when a tenant made thousands of
empty cgroups ranked first in its subtree (issue 22), with ``STAMP_MAX_CGROUPS`` and
without it.  Not a test: it prints a table.

Builds, below a ``memcgctl-test-*`` parent (limits set before anything allocates; all
removed at the end, also on failure), ``jobs`` (128 MiB) with ``deleg`` (badness 100)
holding ``work`` (one sleeper, badness 500) and N empty cgroups at badness 1 beside it,
then times (best and median of ``--rounds``) what one refresh does through the daemon's
own RealPorts (with its inotify tree watch): the choice (a lazy snapshot + the brief
priority walk), the stamp as it was (every skipped empty cgroup's cgroup.procs read), the
stamp now (None beyond the cap: nothing read), and the check at the event.  Needs root
and a memory cgroup hierarchy (v1 here; v2 in the guest).

    python3 bench/plan_tenant_bench.py [--rounds 5] [--sizes 0,2000]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memcgctl.actions.kill import make_killer  # noqa: E402
from memcgctl.daemon.ports import STAMP_MAX_CGROUPS, RealPorts, procs_stamp  # noqa: E402
from memcgctl.daemon.treewatch import TreeWatch  # noqa: E402
from memcgctl.env import Env  # noqa: E402
from memcgctl.logic.priority import plan_inputs, select_priority_brief  # noqa: E402
from memcgctl.state.journal import Journal  # noqa: E402
from memcgctl.vocab.cgpath import CgroupPath  # noqa: E402
from tests.realkernel import TestCgroups, v1_memory_mount  # noqa: E402


def timed(fn: Callable[[], object], rounds: int) -> tuple[float, float, object]:
    """(best, median) in ms over ``rounds`` calls, and the last result."""
    out: object = None
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1000)
    return min(times), statistics.median(times), out


def measure(tc: TestCgroups, n: int, rounds: int, state: Path) -> list[str]:
    top = tc.make(f"jobs{n}", limit=128 << 20)
    deleg = tc.make(f"jobs{n}/deleg", limit=None)
    work = tc.make(f"jobs{n}/deleg/work", limit=None)
    os.setxattr(tc.path(deleg), "trusted.memcgctl.badness", b"100")
    os.setxattr(tc.path(work), "trusted.memcgctl.badness", b"500")
    for i in range(n):
        d = tc.path(deleg) / f"e{i:05d}"
        d.mkdir()
        os.setxattr(d, "trusted.memcgctl.badness", b"1")
    tc.sleeper(work)
    env = Env()
    ports = RealPorts(
        env, make_killer(env.proc_root, env.fs, env.proc), Journal(state), log=io.StringIO()
    )
    ports.tree = TreeWatch(env.fs, CgroupPath(tc.parent), lambda *_: None)
    ports.tree.refresh()
    dom = CgroupPath(top)
    try:
        choice_best, choice_med, decision = timed(
            lambda: select_priority_brief(ports.snapshot(dom), dom, ()), rounds
        )
        inputs = plan_inputs(decision)  # type: ignore[arg-type]
        old_best, old_med, old = timed(lambda: procs_stamp(env.fs, inputs, 10**9), rounds)
        new_best, new_med, new = timed(lambda: ports.plan_stamp(decision), rounds)  # type: ignore[arg-type]
        held = "-" if new is None else str(ports.plan_holds(decision, new))  # type: ignore[arg-type]
    finally:
        ports.tree.close()
    return [
        f"{n:>6} | {len(inputs):>6} | {choice_best:7.1f} / {choice_med:7.1f} | "
        f"{old_best:7.1f} / {old_med:7.1f} ({'kept' if old else 'none'}) | "
        f"{new_best:6.2f} / {new_med:6.2f} ({'kept' if new else 'none'}, holds {held})"
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sizes", default="0,2000")
    args = ap.parse_args()
    mount = v1_memory_mount()
    if os.geteuid() != 0 or mount is None:
        print("needs root and a memory cgroup hierarchy", file=sys.stderr)
        return 2
    print(f"kernel {os.uname().release}, STAMP_MAX_CGROUPS {STAMP_MAX_CGROUPS}, ms best / median")
    print("tenant | inputs | choice            | stamp, uncapped          | stamp now")
    tc = TestCgroups(mount)
    try:
        with tempfile.TemporaryDirectory(prefix="memcgctl-bench-") as state:
            for n in (int(x) for x in args.sizes.split(",")):
                for line in measure(tc, n, args.rounds, Path(state)):
                    print(line, flush=True)
    finally:
        tc.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
