#!/usr/bin/env python3
"""Start-up cost of one-shot commands against ``python -c "import click"`` (target:
at most 1.25x).

Runs are interleaved (baseline, command, baseline, command, ...) so that drift in the
machine's load hits both alike; the medians are compared.  Every command runs against a
fixture tree (FakeHost) through the MEMCGCTL_* variables, so the benchmark is harmless.
Commands that are not in this tree yet (``counters`` lands from another branch) are
skipped.  Uses ``sys.executable`` itself, never a pyenv shim (a shim adds its own start).

    python3 bench/startup_bench.py [--runs 30]
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from memcgctl.cli import LAZY_COMMANDS  # noqa: E402
from tests.fakehost import FakeHost  # noqa: E402

BUDGET = 1.25
BASELINE = ["-c", "import click"]


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    p = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"{argv}: exit {p.returncode}: {p.stderr.decode().strip()}")
    return elapsed


def commands() -> list[tuple[str, list[str]]]:
    wanted = [
        ("get-badness /batch", ["-m", "memcgctl", "get-badness", "/batch"]),
        ("counters --json", ["-m", "memcgctl", "counters", "--json"]),
        ("--version", ["-m", "memcgctl", "--version"]),
    ]
    out = []
    for label, argv in wanted:
        sub = argv[2]
        if not sub.startswith("-") and sub not in LAZY_COMMANDS:
            print(f"skip {label}: no '{sub}' command in this tree yet")
            continue
        out.append((label, argv))
    return out


def _kmsg_records() -> int:
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    n = 0
    try:
        while True:
            try:
                os.read(fd, 8192)
            except BlockingIOError:
                return n
            except BrokenPipeError:
                continue
            n += 1
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30, help="runs of each (at least 20)")
    args = parser.parse_args()
    runs = max(args.runs, 20)
    with tempfile.TemporaryDirectory(prefix="memcgctl-bench-") as tmp:
        host = FakeHost(Path(tmp), version=1)
        host.cgroup("/batch", limit=512 << 20, badness=100)
        host.cgroup("/batch/job1", limit=256 << 20)
        host.cgroup("/svc", delay_ms=2000)
        host.process(1, "/", comm="init")
        host.process(200, "/batch/job1", comm="worker", rss_anon_kb=50_000)
        (Path(tmp) / "kmsg").write_text("")
        env = {**os.environ, **host.cli_env()}
        env.pop("PYTHONPATH", None)
        # click comes from site-packages with its bytecode compiled at install time; give
        # memcgctl the same (an installed memcgctl has it too), or each run would pay
        # for compiling every module from source
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        compileall.compile_dir(ROOT / "memcgctl", quiet=1)
        cmds = [(label, argv, env) for label, argv in commands()]
        if os.geteuid() == 0 and os.access("/dev/kmsg", os.R_OK) and "counters" in LAZY_COMMANDS:
            # the same command on this very host: its real kernel log and hierarchy
            # (read-only; the journal goes to a temporary state directory)
            real = {k: v for k, v in env.items() if not k.startswith("MEMCGCTL_")}
            real["MEMCGCTL_STATE_DIR"] = str(Path(tmp) / "real-state")
            cmds.append(
                ("counters --json (this host)", ["-m", "memcgctl", "counters", "--json"], real)
            )
        for _, argv, cenv in [("baseline", BASELINE, env), *cmds]:  # warm the page cache
            timed(argv, cenv)
        base: list[float] = []
        times: dict[str, list[float]] = {label: [] for label, _, _ in cmds}
        for _ in range(runs):
            for label, argv, cenv in cmds:
                base.append(timed(BASELINE, env))
                times[label].append(timed(argv, cenv))
        records = _kmsg_records() if os.access("/dev/kmsg", os.R_OK) else 0
    base_median = statistics.median(base)
    print(f"python: {sys.executable} {sys.version.split()[0]}, {runs} interleaved runs each")
    print(f"{'baseline: import click':<28} {base_median * 1000:7.1f} ms")
    worst = 0.0
    for label, values in times.items():
        median = statistics.median(values)
        ratio = median / base_median
        worst = max(worst, ratio)
        verdict = "ok" if ratio <= BUDGET else "OVER BUDGET"
        print(f"{label:<28} {median * 1000:7.1f} ms  {ratio:5.2f}x  {verdict}")
    print(f"budget {BUDGET:.2f}x: {'met' if worst <= BUDGET else 'NOT met'} (worst {worst:.2f}x)")
    if records:
        print(f"(this host's kernel log ring holds {records} records; counters reads them all)")


if __name__ == "__main__":
    main()
