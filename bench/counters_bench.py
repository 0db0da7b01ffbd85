#!/usr/bin/env python3
"""Cost of ``counters`` and ``events`` against the size of the journal (issue 17).

For journals of 0, 10 k, 25 k and 100 k records (kill-all records, as a CI host that
tears its jobs down with ``kill-all`` leaves them: the rotated file plus the current
one), prints the fastest wall time and the peak RSS (the process's own ``VmHWM``) of

* ``counters --json`` and ``counters --format prometheus`` (read the running totals,
  ``counters.json``, not the journal), and
* ``events CG --json`` (the history: still reads the whole journal),

in steady state (the totals exist; the first run after an upgrade rebuilds them once:
that run is timed separately as "rebuild").  Every command runs against a fixture tree
(FakeHost) through the MEMCGCTL_* variables: harmless on any machine.  No assertions.

    python3 bench/counters_bench.py [--runs 15]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakehost import FakeHost  # noqa: E402

SIZES = (0, 10_000, 25_000, 100_000)
COMMANDS = {
    "counters --json": ["counters", "--json"],
    "counters --format prometheus": ["counters", "--format", "prometheus"],
    "events /batch --json": ["events", "/batch", "--json"],
}


def record(n: int) -> bytes:
    rec = {
        "time": f"2026-11-{1 + n // 86400 % 28:02d}T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:"
        f"{n % 60:02d}.000000Z",
        "kind": "user_kill" if n % 5 == 0 else "manual_kill",
        "cgroup": f"/batch/job{n % 50}",
        "source": "journal",
        "pid": 10_000 + n,
        "comm": "ci-runner",
        "signal": "SIGKILL",
        "mechanism": "cgroup.kill",
        "target": f"/batch/job{n % 50}",
        "by": "kill-all",
    }
    return json.dumps(rec, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def fill(state: Path, count: int) -> None:
    """count records: three quarters in the rotated file, the rest in the current one."""
    state.mkdir(mode=0o700)
    if not count:
        return
    old = count * 3 // 4
    (state / "journal.jsonl.1").write_bytes(b"".join(record(n) for n in range(old)))
    (state / "journal.jsonl").write_bytes(b"".join(record(n) for n in range(old, count)))
    for p in state.iterdir():
        p.chmod(0o600)


# The child reports its own VmHWM at exit: the peak RSS of the memcgctl process itself
# (wait4's ru_maxrss would carry the forking parent's RSS across the exec).
RUN = (
    "import atexit, os, runpy, sys\n"
    "def hwm():\n"
    "    status = open('/proc/self/status').read()\n"
    "    open(os.environ['BENCH_HWM'], 'w').write(status.split('VmHWM:')[1].split()[0])\n"
    "atexit.register(hwm)\n"
    "sys.argv = ['memcgctl', *sys.argv[1:]]\n"
    "runpy.run_module('memcgctl', run_name='__main__', alter_sys=True)\n"
)


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(seconds, peak RSS in kB) of one run."""
    hwm = Path(env["BENCH_HWM"])
    start = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", RUN, *argv],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if p.returncode != 0:
        raise SystemExit(f"{argv}: exit {p.returncode}")
    return elapsed, int(hwm.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="runs of each (at least 5)")
    args = parser.parse_args()
    runs = max(args.runs, 5)
    compileall.compile_dir(ROOT / "memcgctl", quiet=1)
    rows: list[tuple[str, int, float, int]] = []
    with tempfile.TemporaryDirectory(prefix="memcgctl-bench-") as tmp:
        host = FakeHost(Path(tmp), version=1)
        host.cgroup("/batch", limit=512 << 20)
        for j in range(50):
            host.cgroup(f"/batch/job{j}", limit=64 << 20)
        host.process(1, "/", comm="init")
        (Path(tmp) / "kmsg").write_text("")
        base_env = {**os.environ, **host.cli_env()}
        base_env.pop("PYTHONPATH", None)
        base_env.pop("PYTHONDONTWRITEBYTECODE", None)
        # 100 k records of ~230 bytes need a cap above the default 4 MiB
        base_env["MEMCGCTL_JOURNAL_MAX_BYTES"] = "32M"
        base_env["BENCH_HWM"] = str(Path(tmp) / "hwm")
        for size in SIZES:
            state = Path(tmp) / f"state-{size}"
            fill(state, size)
            env = {**base_env, "MEMCGCTL_STATE_DIR": str(state)}
            first = timed(COMMANDS["counters --json"], env)  # builds counters.json once
            rows.append(("counters --json (rebuild, once)", size, *first))
            for label, argv in COMMANDS.items():
                timed(argv, env)  # warm
                samples = [timed(argv, env) for _ in range(runs)]
                rows.append(
                    (
                        label,
                        size,
                        min(s[0] for s in samples),
                        max(s[1] for s in samples),
                    )
                )
    print(
        f"python: {sys.executable} {sys.version.split()[0]}, {runs} runs each"
        " (fastest run: the least disturbed by the machine's load; largest peak RSS)"
    )
    print(f"{'command':<34} {'records':>8} {'time ms':>8} {'peak RSS MB':>12}  vs empty")
    empty = {label: (t, r) for label, size, t, r in rows if size == 0}
    for label, size, t, rss in rows:
        t0, r0 = empty[label]
        print(
            f"{label:<34} {size:>8} {t * 1000:>8.1f} {rss / 1024:>12.1f}"
            f"  {t / t0:4.2f}x time, {rss / r0:4.2f}x RSS"
        )


if __name__ == "__main__":
    main()
