"""Benchmark: what a delay-0 memcg's standing plan and its choice cost when a tenant made
thousands of empty cgroups ranked first in its subtree (issue 22).  Not a test: it prints
tables.

Builds, below a ``memcgctl-test-*`` parent (limits set before anything allocates; all
removed at the end, also on failure), ``jobs`` (128 MiB) with ``deleg`` (badness 100)
holding ``work`` (one sleeper, badness 500) and N empty cgroups at badness 1 beside it,
then times (best and median of ``--rounds``) through the daemon's own RealPorts (with its
inotify tree watch):

* the choice at the event (a lazy snapshot + the brief priority walk), before (no
  emptiness probe: every empty cgroup read in full) and after (the probe: the link count
  and cgroup.procs of each; fifth pass);
* a refresh of the standing plan: before, each one a whole choice (without the probe)
  and its stamp, refused at ``STAMP_MAX_CGROUPS`` (once a second while near); after, the first one stops at ``REFRESH_MAX_LOOKS`` cgroups looked
  at (``OverBudget``: no plan), and the next ones, while the tree watch's mark is
  unchanged, read only the mark;
* the stamp as it was (every skipped empty cgroup's cgroup.procs read) and now.

Needs root and a memory cgroup hierarchy (v1 here; v2 in the guest:
``MEMCGCTL_IN_VM=1 tests/vm/run-in-kernel python3 bench/plan_tenant_bench.py``).

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
from memcgctl.daemon.choosing import REFRESH_MAX_LOOKS  # noqa: E402
from memcgctl.daemon.ports import STAMP_MAX_CGROUPS, RealPorts, procs_stamp  # noqa: E402
from memcgctl.daemon.treewatch import TreeWatch  # noqa: E402
from memcgctl.env import Env  # noqa: E402
from memcgctl.logic.decision import Decision  # noqa: E402
from memcgctl.logic.priority import plan_inputs, select_priority  # noqa: E402
from memcgctl.logic.priority import select_priority_brief as brief  # noqa: E402
from memcgctl.state.journal import Journal  # noqa: E402
from memcgctl.vocab import structs  # noqa: E402
from memcgctl.vocab.cgpath import CgroupPath  # noqa: E402
from memcgctl.vocab.errors import OverBudget  # noqa: E402
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

    def unprobed() -> Decision:  # before: every empty cgroup read in full
        snap = structs.replace(ports.snapshot(dom), empty_probe=None)
        return brief(snap, dom, ())

    def budgeted() -> Decision | None:  # after: the refresh's bound
        try:
            return brief(ports.snapshot(dom, budget=REFRESH_MAX_LOOKS), dom, ())
        except OverBudget:
            return None

    try:
        b_best, b_med, before = timed(unprobed, rounds)
        a_best, a_med, after = timed(lambda: brief(ports.snapshot(dom), dom, ()), rounds)
        assert isinstance(before, Decision) and isinstance(after, Decision)
        assert before.victim == after.victim  # the same victim
        full = select_priority(ports.snapshot(dom), dom, ())  # every empty one listed
        inputs = plan_inputs(full)
        old_best, old_med, _ = timed(lambda: procs_stamp(env.fs, inputs, 10**9), rounds)
        cap_best, cap_med, _ = timed(lambda: procs_stamp(env.fs, inputs), rounds)
        new_best, new_med, new = timed(lambda: ports.plan_stamp(after), rounds)
        r_best, r_med, refreshed = timed(budgeted, rounds)
        m_best, m_med, _ = timed(lambda: ports.plan_mark(dom), rounds)
    finally:
        ports.tree.close()
    plan = "none" if refreshed is None or new is None else "kept"
    return [
        f"{n:>6} | {b_best:7.1f} / {b_med:7.1f} | {a_best:7.1f} / {a_med:7.1f} | "
        f"{b_best + cap_best:7.1f} / {b_med + cap_med:7.1f} | "
        f"{r_best:6.1f} / {r_med:6.1f} ({plan}) | {m_best:5.3f} / {m_med:5.3f} | "
        f"{old_best:6.1f} / {old_med:6.1f} | {new_best:5.2f} / {new_med:5.2f}"
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
    print(
        f"kernel {os.uname().release}, STAMP_MAX_CGROUPS {STAMP_MAX_CGROUPS}, "
        f"REFRESH_MAX_LOOKS {REFRESH_MAX_LOOKS}, ms best / median"
    )
    print(
        "tenant | event's choice:   | event's choice:   | refresh before:   | "
        "refresh after:        | then (mark    | stamp,          | stamp now\n"
        "       | before (no probe) | after (probe)     | choice + stamp    | "
        "first (bounded)       | unchanged)    | uncapped        |"
    )
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
