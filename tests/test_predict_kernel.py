"""predict-victim against the real kernel (the oracle).

* ``set-badness`` and ``predict-victim --policy priority`` agree on real memcgs.
* Oracle: randomised scenarios — holders of different sizes and raised oom_score_adj in
  nested memcgs under a limited parent.  We predict with ``--policy kernel``, then push
  the parent over its limit with a small allocating trigger and read the kernel log: the
  process the kernel killed must be the one predicted.  The base seed is printed in
  every test id and failure message; rerun one with ``MEMCGCTL_ORACLE_SEED=<seed>``.
* The host-wide ranking agrees with the kernel's own /proc/PID/oom_score.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.env import Env
from memcgctl.logic.kernelheuristic import host_totalpages, select_kernel
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.model import KernelParams
from tests.procscore import proc_oom_score
from tests.realkernel import HELPERS, TestCgroups, wait_until

MIB = 1 << 20
BASE_SEED = int(os.environ.get("MEMCGCTL_ORACLE_SEED", random.SystemRandom().randrange(10**6)))
N_SCENARIOS = 10


def _invoke(runner: CliRunner, args: list[str], state: Path) -> tuple[int, str]:
    r = runner.invoke(cli, args, env={"MEMCGCTL_STATE_DIR": str(state)})
    return r.exit_code, r.output


# -- priority: set-badness and predict-victim agree ----------------------------------------


def test_set_badness_and_priority_prediction_agree(
    cgroups: TestCgroups, runner: CliRunner, tmp_path: Path
) -> None:
    low = cgroups.make("low", limit=64 * MIB)
    high = cgroups.make("high", limit=64 * MIB)
    small = cgroups.hog(low, 1)
    big = cgroups.hog(low, 16)
    other = cgroups.hog(high, 32)
    top = cgroups.parent
    for cg, value in ((low, "100"), (high, "900")):
        code, out = _invoke(runner, ["set-badness", cg, value], tmp_path)
        assert code == 0, out

    def predict() -> dict[str, object]:
        code, out = _invoke(runner, ["predict-victim", top, "--json"], tmp_path)
        assert code == 0, out
        doc: dict[str, object] = json.loads(out)
        return doc

    doc = predict()
    victim = doc["victim"]
    assert isinstance(victim, dict)
    # /low has the lower badness; inside it the largest rss
    assert victim["pid"] == big.pid
    walk = doc["walk"]
    assert isinstance(walk, list)
    assert [lv["cgroup"] for lv in walk] == [top, low]
    assert walk[0]["chosen"]["cgroup"] == low
    # a process badness below its sibling: the small one goes first now
    code, out = _invoke(runner, ["set-badness", "--pid", str(small.pid), "50"], tmp_path)
    assert code == 0, out
    victim = predict()["victim"]
    assert isinstance(victim, dict) and victim["pid"] == small.pid
    # raise /low to 1000: never; the other cgroup is next
    code, out = _invoke(runner, ["set-badness", low, "1000"], tmp_path)
    assert code == 0, out
    victim = predict()["victim"]
    assert isinstance(victim, dict) and victim["pid"] == other.pid
    # and the explanation says why, in words
    code, out = _invoke(runner, ["predict-victim", top, "--explain", "--plain"], tmp_path)
    assert code == 0, out
    assert "skipped: badness 1000: never" in out
    assert f"victim: pid {other.pid}" in out


# -- the kernel log ----------------------------------------------------------------------

KILLED = re.compile(r"Memory cgroup out of memory: Killed process (\d+) \((.*)\) total-vm")
SUMMARY = re.compile(
    r"oom-kill:constraint=(\w+),.*oom_memcg=([^,]+),task_memcg=([^,]+),.*pid=(\d+)"
)


@dataclass
class Kill:
    pid: int
    oom_memcg: str | None
    task_memcg: str | None


class Kmsg:
    """Records of /dev/kmsg written after we opened it."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def close(self) -> None:
        os.close(self.fd)

    def records(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                rec = os.read(self.fd, 8192)
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.EPIPE:  # overwritten records: go on
                    continue
                raise
            out.append(rec.decode("utf-8", "replace").split(";", 1)[-1].split("\n", 1)[0])

    def wait_kill(self, pids: set[int], memcg: str, timeout: float = 15.0) -> Kill:
        """The first kill of one of ``pids`` by a memcg OOM of ``memcg``."""
        summaries: dict[int, tuple[str, str]] = {}

        def logged() -> Kill | None:
            for text in self.records():
                m = SUMMARY.search(text)
                if m and int(m.group(4)) in pids:
                    summaries[int(m.group(4))] = (m.group(2), m.group(3))
                m = KILLED.search(text)
                if m and int(m.group(1)) in pids:
                    pid = int(m.group(1))
                    oom_memcg, task_memcg = summaries.get(pid, (None, None))
                    if oom_memcg not in (None, memcg):
                        continue
                    return Kill(pid, oom_memcg, task_memcg)
            return None

        return wait_until(
            logged, f"an OOM kill of {sorted(pids)} in {memcg} in the kernel log", timeout
        )


# -- oracle scenarios ------------------------------------------------------------------

LIMIT = 192 * MIB
PLACES = ["oom", "oom/a", "oom/a/b", "oom/c"]
HOG_BASE_MIB = 13.5  # a sleeping python hog's rss (anon + file) before it allocates
ADJ_PAGES_MIB = (LIMIT // 4096 // 1000) * 4096 / MIB  # one oom_score_adj point, in MiB


@dataclass(frozen=True)
class Holder:
    place: str
    mib: int
    adj: int

    @property
    def expected_mib(self) -> float:
        return HOG_BASE_MIB + self.mib + self.adj * ADJ_PAGES_MIB


def scenario(seed: int) -> list[Holder]:
    """4 holders allocating 140 MiB in all (so the trigger can grow only ~20 MiB before
    the 192 MiB parent is full), the top one ≥ 10 MiB ahead after adj, and ≥ 50 MiB
    in all so the trigger (~35 MiB at most) never comes close."""
    rng = random.Random(seed)
    while True:
        cuts = sorted(rng.sample(range(4, 137), 3))
        sizes = [cuts[0], cuts[1] - cuts[0], cuts[2] - cuts[1], 140 - cuts[2]]
        if min(sizes) < 4:
            continue
        holders = [
            Holder(rng.choice(PLACES), s, rng.choice([0, 0, 0, 50, 100, 150, 250])) for s in sizes
        ]
        ranked = sorted((h.expected_mib for h in holders), reverse=True)
        if ranked[0] - ranked[1] >= 10 and ranked[0] >= 55:
            return holders


@pytest.mark.parametrize("index", range(N_SCENARIOS), ids=lambda i: f"seed{BASE_SEED}+{i}")
def test_oracle_kernel_kills_the_predicted_process(
    cgroups: TestCgroups, runner: CliRunner, tmp_path: Path, index: int
) -> None:
    run_oracle(cgroups, runner, tmp_path, BASE_SEED + index)


def run_oracle(
    cgroups: TestCgroups,
    runner: CliRunner,
    tmp_path: Path,
    seed: int,
    leaf: dict[str, str] | None = None,
) -> None:
    """One oracle scenario.  ``leaf`` maps a place to the cgroup its holder runs in
    (cgroup v2 has no processes in inner cgroups: tests/v2 maps "oom" to "oom/x")."""
    where = leaf or {}
    holders = scenario(seed)
    oom = cgroups.make("oom", limit=LIMIT)
    for place in PLACES[1:]:
        cgroups.make(place)  # children keep the default 256 MiB: the parent's limit hits first
    for place in where.values():
        cgroups.make(place)
    procs = {
        cgroups.hog(f"{cgroups.parent}/{where.get(h.place, h.place)}", h.mib, h.adj).pid: h
        for h in holders
    }
    context = f"seed {seed} (MEMCGCTL_ORACLE_SEED={BASE_SEED}): {holders}"

    code, out = _invoke(runner, ["predict-victim", oom, "--policy", "kernel", "--json"], tmp_path)
    assert code == 0, out
    doc = json.loads(out)
    ranked = doc["candidates"]
    assert {c["pid"] for c in ranked} == set(procs), context
    predicted = doc["victim"]["pid"]
    # no near-tie: the prediction is not decided by the per-CPU counter fuzz
    assert ranked[0]["points"] - ranked[1]["points"] >= (8 * MIB) // 4096, (context, ranked)
    assert doc["totalpages"] == LIMIT // 4096

    kmsg = Kmsg()
    try:
        trigger = cgroups.spawn(
            cgroups.make("oom/t"), [sys.executable, str(HELPERS / "grow.py"), "1024", "80"]
        )
        kill = kmsg.wait_kill({*procs, trigger.pid}, oom)
    finally:
        kmsg.close()
    assert kill.pid == predicted, f"kernel killed {kill.pid}, predicted {predicted}; {context}"
    place = procs[kill.pid].place
    if kill.task_memcg is not None:  # None: the kernel rate-limited its report (10 per
        # 5 s, e.g. right after another test's OOM storm): the kill line names no memcg
        assert kill.task_memcg == f"{cgroups.parent}/{where.get(place, place)}", context
    with contextlib.suppress(OSError):
        trigger.kill()


# -- host-wide ranking vs /proc/PID/oom_score -----------------------------------------------


def test_host_ranking_matches_kernel_oom_score(cgroups: TestCgroups, tmp_path: Path) -> None:
    job = cgroups.make("job", limit=240 * MIB)
    spec = [(0, 0), (48, 0), (24, 120), (8, 300), (64, 60)]
    pids = {cgroups.hog(job, mib, adj).pid for mib, adj in spec}
    env = Env(state_dir=tmp_path)
    snap = env.snapshot(CgroupPath("/"))
    params = KernelParams.of(snap, env.proc.sysctl("vm.swappiness"))
    d = select_kernel(snap, CgroupPath("/"), params)
    total = host_totalpages(params)
    ours = [s for s in d.candidates if s.process.pid in pids]
    assert {s.process.pid for s in ours} == pids
    kernel = {pid: int(Path(f"/proc/{pid}/oom_score").read_text()) for pid in pids}
    # our ranking, read in order, never goes up in the kernel's own score
    scores = [kernel[s.process.pid] for s in ours]
    assert scores == sorted(scores, reverse=True), (scores, [s.points for s in ours])
    # the 5.9+ formula, exact unless the per-CPU rss fuzz (≤ 256 pages on 2 CPUs: four
    # counters) can straddle a rounding step
    fuzz = 256
    exact = 0
    for s in ours:
        computed = proc_oom_score(s.process, params)
        lo = _score_at(s.points - fuzz, total)
        hi = _score_at(s.points + fuzz, total)
        assert lo <= kernel[s.process.pid] <= hi, (s.process.pid, computed, kernel[s.process.pid])
        if lo == hi:
            assert computed == kernel[s.process.pid]
            exact += 1
    # one oom_score step is totalpages*3/2000 pages: only when it is wider than the fuzz
    # can some scores be exact (24 GiB host: yes; the 1 GiB v2 guest: no)
    if total * 3 // 2000 > 2 * fuzz:
        assert exact >= 1


def _score_at(points: int, total: int) -> int:
    q = abs(points * 1000) // total
    q = q if points >= 0 else -q
    return int((1000 + q) * 2 / 3)


def test_predict_victim_cli_subprocess_real_root_is_read_only(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    """The hierarchy root is a fine OOM root: predict-victim only reads."""
    cg = cgroups.make("j", limit=32 * MIB)
    cgroups.sleeper(cg)
    r = subprocess.run(
        [sys.executable, "-m", "memcgctl", "predict-victim", "/", "--policy", "kernel", "--json"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "MEMCGCTL_STATE_DIR": str(tmp_path)},
        check=False,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["oom_root"] == "/" and doc["victim"] is not None
