"""Benchmark: the daemon's delay-0 reaction in the cgroup v2 guest, on an empty hierarchy
and with a Kubernetes node's tree present (issue 22).

Run as root: ``python3 bench/scale_v2_bench.py --episodes 3`` (``--tree 5000 --procs
2000`` are the defaults; ``--rate 'unthrottled'`` or ``--only memcg`` for a shorter
run).  Like bench/enforcement_bench.py it boots the v2 guest (tests/vm/run-in-kernel)
and runs itself there; only one guest at a time on a machine.

In one guest run, for each growth rate, with delay 0:

1. on the empty hierarchy: the bare handler's floor (``bare_cell``: memory.high set by
   hand, the first ``high`` event → SIGKILL → pidfd), the memcg cell and the host cell of
   bench/enforcement_bench.py (the daemon with ``--root`` the test parent, resp. ``/``);
2. then the node-like tree of tests/nodetree.py below the same test parent (``--tree``
   cgroups, each a memcg: the memory controller enabled down the pods' tree as a kubelet
   does, ``memory.max`` on every pod, and ``system.slice`` services) and ``--procs``
   sleeping processes in its leaves, and the same three cells again, and the memcg cell
   once more as one of the pods (``kubepods/burstable/memcg-0-…``: the ``pod`` rows,
   compared with the memcg cell on the empty hierarchy).

``fs.inotify.max_user_watches`` is set to 65,536 in the guest first (``--max-user-watches``;
0 keeps the guest's 8,192, a 1 GiB machine's default, with which the daemon's tree watch
does not fit 5,000 cgroups and it walks the tree per rescan instead).  The tree's
kernel memory is measured as it is built (MemAvailable, Slab, Percpu); the sleepers
are started in batches while MemAvailable stays above what the cells need (the memcg
cell's 256 MiB, the daemon and a margin): fewer than asked is said in the output.

Printed: one JSON line per cell as it ends, then a table (markdown) with, per domain and
rate, the episodes won (the policy's victim died first, no kernel OOM kill), deadline →
death p50 / p99 in both phases, tree ÷ empty, and the daemon ÷ the bare floor measured
in the same phase; and the issue's targets (memcg ≤ 2× bare, host ≤ 3× bare, tree ≤
1.5× empty, p50).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.enforcement_bench import (  # noqa: E402
    RATES,
    bare_cell,
    cell,
    mem_available,
    rerun_in_guest,
)
from tests.nodetree import (  # noqa: E402
    CGROUPS_PER_POD,
    build_system,
    build_tree,
    node_shape,
    start_sleepers,
)
from tests.realkernel import TestCgroups, v1_memory_mount  # noqa: E402

MIB = 1 << 20
# what the cells need once the tree stands: the memcg cell's 256 MiB, the daemon and its
# guardian (~60 MiB under the emulator), this script, a margin
FLOOR = 420 * MIB
# the guest's default (8,192 with 1 GiB) is a small machine's; a node's is larger (this
# 23 GiB development VM: 192,540), and the daemon's tree watch wants half of it
WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")
BATCH = 250  # sleepers per forker
KINDS = ("bare", "memcg", "pod", "host")
POD_PARENT = "kubepods/burstable/"  # the pod cell: the memcg cell as one more pod

Row = dict[str, object]


def meminfo() -> dict[str, int]:
    """/proc/meminfo's fields in bytes."""
    out: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = int(value.split()[0]) * 1024
    return out


def kinds_of(only: str | None, phase: str) -> list[str]:
    """A phase's cells: the floor first; the pod cell only with the tree (``--only pod``
    measures the memcg cell on the empty hierarchy, to compare it with)."""
    chosen = {
        None: ("memcg", "pod", "host"),
        "memcg": ("memcg",),
        "pod": ("memcg",) if phase == "empty" else ("pod",),
        "host": ("host",),
    }[only]
    return ["bare", *(k for k in chosen if (k, phase) != ("pod", "empty"))]


def run_cells(
    tc: TestCgroups, phase: str, args: argparse.Namespace, extra: dict[str, object]
) -> list[Row]:
    rows: list[Row] = []
    logs = None
    if args.logs is not None:
        logs = args.logs / phase
        logs.mkdir(parents=True, exist_ok=True)
    for rate, pause in RATES.items():
        if args.rate and args.rate != rate:
            continue
        for kind in kinds_of(args.only, phase):
            t0 = time.monotonic()
            if kind == "bare":
                row = bare_cell(tc, pause, args.episodes)
            elif kind == "pod":
                row = cell(tc, False, 0, pause, args.episodes, logs, where=POD_PARENT)
                row["domain"] = "pod"
            else:
                row = cell(tc, kind == "host", 0, pause, args.episodes, logs)
            row.update(phase=phase, seconds=round(time.monotonic() - t0, 1), **extra)
            row.update(watches=args.watches)
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def build_node(tc: TestCgroups, args: argparse.Namespace, work: Path) -> dict[str, object]:
    """The tree and its sleepers below tc's parent; what they cost."""
    pods, services = node_shape(args.tree)
    m0, t0 = meminfo(), time.monotonic()
    leaves, _ = build_tree(tc, pods)
    leaves += build_system(tc, services)
    made = 4 + CGROUPS_PER_POD * pods + 1 + services
    m1, t1 = meminfo(), time.monotonic()
    home = tc.make("sleepers", limit=None)
    started = 0
    while started < args.procs and mem_available() > FLOOR + BATCH * 160 * 1024:
        batch = min(BATCH, args.procs - started)
        chunk = [leaves[(started + i) % len(leaves)] for i in range(batch)]
        start_sleepers(tc, chunk, batch, work, home=home)
        started += batch
    running = sum(len(tc.pids(cg)) for cg in set(leaves))
    m2, t2 = meminfo(), time.monotonic()

    def cost(a: dict[str, int], b: dict[str, int], per: int) -> dict[str, float]:
        used = a["MemAvailable"] - b["MemAvailable"]
        return {
            "MiB": round(used / MIB, 1),
            "KiB_each": round(used / 1024 / max(per, 1), 1),
            "slab_MiB": round((b["Slab"] - a["Slab"]) / MIB, 1),
            "percpu_MiB": round((b.get("Percpu", 0) - a.get("Percpu", 0)) / MIB, 1),
        }

    node: dict[str, object] = {
        "cgroups": made,
        "pods": pods,
        "services": services,
        "procs": running,
        "procs_asked": args.procs,
        "build_s": round(t1 - t0, 1),
        "sleepers_s": round(t2 - t1, 1),
        "cgroups_cost": cost(m0, m1, made),
        "procs_cost": cost(m1, m2, running),
        "available_MiB": round(m2["MemAvailable"] / MIB),
    }
    print(json.dumps({"node": node}), flush=True)
    return node


def p50_of(rows: list[Row], phase: str, kind: str, rate: str) -> Row | None:
    for r in rows:
        if (r["phase"], r["domain"], r["rate"]) == (phase, kind, rate):
            return r
    return None


def num(row: Row | None, key: str) -> float | None:
    value = None if row is None else row.get(key)
    return float(str(value)) if value is not None else None


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}×" if a is not None and b else "-"


def ms_pair(row: Row | None) -> str:
    a, b = num(row, "p50_ms"), num(row, "p99_ms")
    return "-" if a is None else f"{a:.0f} / {b or 0:.0f} ms"


def won(row: Row | None) -> str:
    if row is None or row["domain"] == "bare":
        return "-"
    return f"{row['ok']}/{row['episodes']}"


def report(rows: list[Row], node: dict[str, object] | None, args: argparse.Namespace) -> None:
    print(
        f"\nscale, cgroup v2 guest kernel {os.uname().release}, delay 0, "
        f"{args.episodes} episodes per cell, {time.strftime('%Y-%m-%d', time.gmtime())}, "
        f"fs.inotify.max_user_watches {args.watches}"
    )
    if node is not None:
        c, p = node["cgroups_cost"], node["procs_cost"]
        assert isinstance(c, dict) and isinstance(p, dict)
        print(
            f"tree: {node['cgroups']} memcgs below the test parent ({node['pods']} pods × "
            f"{CGROUPS_PER_POD}, {node['services']} services), {node['procs']} sleeping "
            f"processes (asked {node['procs_asked']}); built in {node['build_s']} s + "
            f"{node['sleepers_s']} s"
        )
        print(
            f"guest memory: the cgroups {c['MiB']} MiB ({c['KiB_each']} KiB each; slab "
            f"{c['slab_MiB']}, percpu {c['percpu_MiB']} MiB), the sleepers {p['MiB']} MiB "
            f"({p['KiB_each']} KiB each); MemAvailable left {node['available_MiB']} MiB"
        )
    print("won: the policy's victim died first and the kernel's OOM killer killed nobody")
    print("p50 / p99: the valve's event to the victim's death (pidfd); ÷ bare: same phase")
    print("pod: the memcg cell as one more pod among the tree's; empty: the memcg cell's\n")
    print(
        "| domain | growth | won, empty | won, tree | empty p50 / p99 | tree p50 / p99 "
        "| tree ÷ empty p50 / p99 | ÷ bare p50, empty | ÷ bare p50, tree |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    limit = {"memcg": 2.0, "pod": 2.0, "host": 3.0}
    worst: dict[str, tuple[float, list[float]]] = {}
    for kind in KINDS:
        for rate in RATES:
            # the pod cell (the memcg cell among the pods) against the memcg cell, empty
            e = p50_of(rows, "empty", "memcg" if kind == "pod" else kind, rate)
            t = p50_of(rows, "tree", kind, rate)
            if (e is None and t is None) or (kind == "pod" and t is None):
                continue
            be, bt = p50_of(rows, "empty", "bare", rate), p50_of(rows, "tree", "bare", rate)
            e50, t50 = num(e, "p50_ms"), num(t, "p50_ms")
            te = f"{ratio(t50, e50)} / {ratio(num(t, 'p99_ms'), num(e, 'p99_ms'))}"
            vs_e = ratio(e50, num(be, "p50_ms")) if kind != "bare" else ""
            vs_t = ratio(t50, num(bt, "p50_ms")) if kind != "bare" else ""
            print(
                f"| {kind} | {rate} | {won(e)} | {won(t)} | {ms_pair(e)} | {ms_pair(t)} "
                f"| {te} | {vs_e} | {vs_t} |"
            )
            if kind == "bare":
                continue
            for key, bound, a, b in (
                (f"{kind} ÷ bare, empty", limit[kind], e50, num(be, "p50_ms")),
                (f"{kind} ÷ bare, tree", limit[kind], t50, num(bt, "p50_ms")),
                (f"{kind} tree ÷ empty", 1.5, t50, e50),
            ):
                if a is not None and b and key != "pod ÷ bare, empty":
                    worst.setdefault(key, (bound, []))[1].append(a / b)
    split_table(rows)
    games = [r for r in rows if r["domain"] != "bare"]
    total = sum(int(str(r["episodes"])) for r in games)
    ok = sum(int(str(r["ok"])) for r in games)
    lost = sorted({o for r in games for o in cast(list[str], r["outcomes"]) if o != "ok"})
    print(f"\nwon: {ok} of {total} episodes" + (f" (not won: {', '.join(lost)})" if lost else ""))
    for key, (bound, values) in worst.items():
        print(
            f"target {key} p50 ≤ {bound:g}×: worst rate {max(values):.1f}× "
            f"(median over rates {statistics.median(values):.1f}×), "
            f"{'met' if max(values) <= bound else 'NOT met'}"
        )


def split_table(rows: list[Row]) -> None:
    """deadline -> death cut at the signal (the daemon's planned kills): deadline ->
    signal is the daemon's own time, signal -> death the victim's exit, which is all the
    bare handler measures (it starts its clock at its kill)."""
    print(
        "\ndeadline -> death cut at the signal, p50 (planned kills: late_ms, and to death "
        "minus late_ms); bare: its signal -> death"
    )
    print(
        "| domain | growth | phase | deadline → signal | signal → death | bare signal → death "
        "| signal → death ÷ bare | deadline → death ÷ bare |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in KINDS[1:]:
        for rate in RATES:
            for phase in ("empty", "tree"):
                r = p50_of(rows, phase, kind, rate)
                if r is None:
                    continue
                b = num(p50_of(rows, phase, "bare", rate), "p50_ms")
                late, after = num(r, "late_p50_ms"), num(r, "after_p50_ms")
                print(
                    f"| {kind} | {rate} | {phase} | {late or 0:.1f} ms | "
                    f"{'-' if after is None else f'{after:.1f} ms'} | "
                    f"{'-' if b is None else f'{b:.1f} ms'} | {ratio(after, b)} "
                    f"| {ratio(num(r, 'p50_ms'), b)} |"
                )


def in_guest(args: argparse.Namespace) -> int:
    mount = v1_memory_mount()
    assert mount is not None and (mount / "cgroup.controllers").exists(), "needs cgroup v2"
    t0 = time.monotonic()
    tc = TestCgroups(mount)
    TestCgroups.write(tc.path(tc.parent), "memory.max", "max")  # the guest is the host here
    if args.max_user_watches:
        WATCHES.write_text(f"{args.max_user_watches}\n")  # the throw-away guest's only
    args.watches = int(WATCHES.read_text())
    work = Path(tempfile.mkdtemp(prefix="memcgctl-scale-v2-"))
    rows: list[Row] = []
    node = None
    try:
        rows += run_cells(tc, "empty", args, {"cgroups": 0, "procs": 0})
        if args.tree:
            node = build_node(tc, args, work)
            counts = {"cgroups": node["cgroups"], "procs": node["procs"]}
            rows += run_cells(tc, "tree", args, counts)
    finally:
        tc.cleanup()
    report(rows, node, args)
    print(f"\n(the guest run took {time.monotonic() - t0:.0f} s)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=10, help="episodes per cell")
    ap.add_argument("--tree", type=int, default=5000, help="cgroups in the tree (0: none)")
    ap.add_argument("--procs", type=int, default=2000, help="sleeping processes in it")
    ap.add_argument("--rate", choices=list(RATES), help="one growth rate only")
    ap.add_argument("--only", choices=["memcg", "pod", "host"], help="one domain (and the floor)")
    ap.add_argument(
        "--max-user-watches",
        type=int,
        default=65536,
        help="fs.inotify.max_user_watches in the guest (0: its own 8,192, too few for "
        "the daemon's tree watch over 5,000 cgroups: it walks per rescan instead)",
    )
    ap.add_argument("--logs", type=Path, help="keep each cell's daemon log in this directory")
    args = ap.parse_args()
    return in_guest(args) if os.environ.get("MEMCGCTL_IN_VM") else rerun_in_guest()


if __name__ == "__main__":
    sys.exit(main())
