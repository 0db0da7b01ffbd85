"""Benchmark: what resolving a process's badness (issue 25: registry, rules,
inheritance) adds per process — ``read_process`` over every process on this host,
against the bare loop of bench/predict_bench.py (status + oom_score_adj), with an empty
registry and no rules, with one registry entry (its family found from
/proc/PID/task/*/children, the rest read nothing more), and with comm + cmdline rules
(a cmdline matcher reads /proc/PID/cmdline of every process).  Best of 40, read-only.

    python3 bench/resolve_bench.py
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT_DIR))

from memcgctl.env import Env  # noqa: E402
from memcgctl.snapshot import BadnessResolver, read_process  # noqa: E402
from memcgctl.state.rules import load_rules  # noqa: E402
from memcgctl.state.store import Entry  # noqa: E402
from memcgctl.vocab.cgpath import ROOT  # noqa: E402

d = Path(tempfile.mkdtemp())
rules = d / "rules.d"
rules.mkdir(mode=0o755)
pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
env = Env(state_dir=d / "s", rules_dir=d / "none")
proc = env.proc


def run(res_factory: Callable[[], BadnessResolver]) -> Callable[[], None]:
    def go() -> None:
        res = res_factory()
        for pid in pids:
            with contextlib.suppress(Exception):  # gone meanwhile
                read_process(proc, pid, ROOT, res)

    return go


def best(fn: Callable[[], None], n: int = 40) -> float:
    b = 1e9
    for _ in range(n):
        t = time.perf_counter()
        fn()
        b = min(b, time.perf_counter() - t)
    return b * 1000


def bare() -> None:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", "rb") as f:
                f.read()
            with open(f"/proc/{pid}/oom_score_adj", "rb") as f:
                f.read()
        except OSError:
            pass


me = (os.getpid(), proc.start_time(os.getpid()))
(rules / "a.toml").write_text(
    "[[rule]]\ncomm='^nothing-matches$'\nbadness=1\n[[rule]]\ncmdline='zzz-no'\nbadness=2\n"
)
rs = load_rules(rules)
tb = best(bare)
t0 = best(run(lambda: BadnessResolver(proc, {}, None)))
t1 = best(run(lambda: BadnessResolver(proc, {me: Entry(900, 0)}, None)))
t2 = best(run(lambda: BadnessResolver(proc, {}, rs)))
print(f"{len(pids)} processes, kernel {os.uname().release}")
print(f"bare loop (status + oom_score_adj):         {tb:6.2f} ms  1.00x")
print(f"read_process, empty registry, no rules:     {t0:6.2f} ms  {t0 / tb:.2f}x")
print(f"read_process, 1 registry entry (family):   {t1:6.2f} ms  {t1 / tb:.2f}x")
print(f"read_process, comm + cmdline rules:         {t2:6.2f} ms  {t2 / tb:.2f}x")
