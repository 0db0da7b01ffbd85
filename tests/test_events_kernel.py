"""events / counters against the real kernel (cgroup v1 memory controller).

Other engineers trigger OOMs on this machine at the same time: every assertion filters
by our own cgroup names and pids.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.state.journal import Journal
from memcgctl.vocab.records import utc_now_iso
from tests.realkernel import HELPERS, TestCgroups, open_files, wait_until

ROOT = Path(__file__).resolve().parent.parent
Event = dict[str, Any]


class Follow:
    """``memcgctl events CG --follow --json`` as a subprocess, read line by line."""

    def __init__(self, state: Path, cg: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memcgctl",
                "--state-dir",
                str(state),
                "events",
                cg,
                "--follow",
                "--json",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.buf = b""
        self.events: list[Event] = []
        assert self.proc.stderr is not None
        ready = self._line(self.proc.stderr.fileno(), b"", 20)[0]
        assert ready is not None and b"following" in ready, ready

    @staticmethod
    def _line(fd: int, buf: bytes, timeout: float) -> tuple[bytes | None, bytes]:
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None, buf
            chunk = os.read(fd, 65536)
            if not chunk:
                return None, buf
            buf += chunk
        line, _, rest = buf.partition(b"\n")
        return line, rest

    def wait_for(self, pred: Callable[[Event], bool], timeout: float = 20) -> Event:
        for seen in self.events:
            if pred(seen):
                return seen
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line, self.buf = self._line(
                self.proc.stdout.fileno(), self.buf, deadline - time.monotonic()
            )
            if line is None:
                break
            ev: Event = json.loads(line)
            self.events.append(ev)
            if pred(ev):
                return ev
        raise AssertionError(f"no matching event; saw {self.events}")

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        return err.decode()


@pytest.fixture
def follow(tmp_path: Path) -> Iterator[Callable[[str], Follow]]:
    started: list[Follow] = []

    def start(cg: str) -> Follow:
        f = Follow(tmp_path / "state", cg)
        started.append(f)
        return f

    yield start
    for f in started:
        if f.proc.poll() is None:
            f.stop()


def watching(f: Follow, cgroups: TestCgroups, cg: str) -> None:
    """Wait until the follower holds cg's notification file open (v1: the
    memory.oom_control its eventfd is registered on; v2: memory.events)."""
    name = "memory.oom_control" if cgroups.version == 1 else "memory.events"
    target = str(cgroups.path(cg) / name)
    wait_until(lambda: target in open_files(f.proc.pid), f"the follower to watch {cg}")


def grower(cgroups: TestCgroups, cg: str, max_mib: int = 200) -> subprocess.Popen[bytes]:
    return cgroups.spawn(cg, [sys.executable, str(HELPERS / "grow.py"), "1024", str(max_mib)])


def cli_json(state: Path, *args: str) -> Any:
    r = CliRunner().invoke(cli, ["--state-dir", str(state), *args])
    assert r.exit_code == 0, r.output
    return r.output


def test_real_oom_kill_follow_history_counters(
    cgroups: TestCgroups, follow: Callable[[str], Follow], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    parent = cgroups.make("app", limit=None)
    cg = cgroups.make("app/job", limit=32 << 20)
    f = follow(cgroups.parent)
    g = grower(cgroups, cg)
    comm = Path(f"/proc/{g.pid}/comm").read_text().strip()
    ev = f.wait_for(lambda e: e["kind"] == "oom_kill" and e.get("pid") == g.pid)
    assert g.wait(timeout=20) == -9
    assert ev["comm"] == comm
    assert ev["cgroup"] == cg
    assert ev["constraint"] == "CONSTRAINT_MEMCG"
    assert ev["source"] == "kmsg" and ev["time"].endswith("Z")
    assert ev["anon_rss_kb"] > 16 << 10
    # the eventfd saw the OOM too
    f.wait_for(lambda e: e["kind"] == "under_oom" and e["cgroup"] == cg)
    f.stop()

    # history (kernel ring + journal), filtered to our subtree
    out = cli_json(state, "events", parent, "--json")
    kills = json.loads(out)["events"]
    assert [k["pid"] for k in kills if k["kind"] == "oom_kill"] == [g.pid]
    out = cli_json(state, "events", parent)
    assert f"pid {g.pid} ({comm})" in out

    # counters: local 1 on the cgroup, hierarchical 1 on its parent, by_cause.memcg 1
    doc = json.loads(cli_json(state, "counters", cg, parent, "--json"))
    by = {c["cgroup"]: c for c in doc["cgroups"]}
    assert by[cg]["local"] == {"oom_kill": 1}
    assert by[parent]["local"] == {"oom_kill": 0}
    assert by[parent]["hierarchical"] == {"oom_kill": 1}
    assert by[parent]["by_cause"] == {"system": 0, "memcg": 1, "user": 0}
    assert by[parent]["complete"] is True
    assert doc["system"]["oom_kill"] >= 1
    # the kill is in the journal, once (every kernel kill of the host is journaled)
    ours = [r for r in Journal(state).read() if r["kind"] == "oom_kill" and r.get("pid") == g.pid]
    assert len(ours) == 1 and ours[0]["cgroup"] == cg

    # a kill-all style journal record raises by_cause.user
    Journal(state).append(
        [
            {
                "time": utc_now_iso(),
                "kind": "user_kill",
                "cgroup": cg,
                "source": "journal",
                "pid": 12345,
                "comm": "victim",
                "mechanism": "freezer",
                "by": "kill-all",
            }
        ]
    )
    doc = json.loads(cli_json(state, "counters", parent, "--json"))
    assert doc["cgroups"][0]["by_cause"] == {"system": 0, "memcg": 1, "user": 1}
    prom = cli_json(state, "counters", parent, "--format", "prometheus")
    assert f'memcgctl_kernel_oom_kills_total{{cgroup="{parent}",scope="hierarchical"}} 1' in prom


def test_removed_cgroup_while_watched_stream_continues(
    cgroups: TestCgroups, follow: Callable[[str], Follow]
) -> None:
    doomed = cgroups.make("doomed", limit=32 << 20)
    cg = cgroups.make("job", limit=32 << 20)
    f = follow(cgroups.parent)
    watching(f, cgroups, doomed)
    watching(f, cgroups, cg)
    cgroups.path(doomed).rmdir()
    # the follower lets go of the removed cgroup and goes on
    wait_until(
        lambda: not any(f"/{Path(doomed).name}/" in p for p in open_files(f.proc.pid)),
        f"the follower to drop its watch on the removed {doomed}",
    )
    assert f.proc.poll() is None
    g = grower(cgroups, cg)
    ev = f.wait_for(lambda e: e["kind"] == "oom_kill" and e.get("pid") == g.pid)
    assert ev["cgroup"] == cg
    # a cgroup created after the start is picked up by the re-scan
    late = cgroups.make("late", limit=32 << 20)
    watching(f, cgroups, late)  # the follower re-scans every 1.5 s
    g2 = grower(cgroups, late)
    f.wait_for(lambda e: e["kind"] == "under_oom" and e["cgroup"] == late)
    f.wait_for(lambda e: e["kind"] == "oom_kill" and e.get("pid") == g2.pid)
    err = f.stop()
    assert "Traceback" not in err


def test_v1_eventfd_under_oom_and_resolved(
    cgroups: TestCgroups, follow: Callable[[str], Follow]
) -> None:
    cg = cgroups.make("paused", limit=32 << 20)
    TestCgroups.write(cgroups.path(cg), "memory.oom_control", "1")
    try:
        f = follow(cgroups.parent)
        g = grower(cgroups, cg, max_mib=64)
        ev = f.wait_for(lambda e: e["kind"] == "under_oom" and e["cgroup"] == cg)
        assert ev["source"] == "eventfd"
        assert "under_oom 1" in (cgroups.path(cg) / "memory.oom_control").read_text()
        assert g.poll() is None  # paused, not killed
        cgroups.set_limit(cg, 128 << 20)
        f.wait_for(lambda e: e["kind"] == "oom_resolved" and e["cgroup"] == cg)
        assert g.stdout is not None and g.stdout.readline() == b"survived\n"
        assert not any(e["kind"] == "oom_kill" and e.get("pid") == g.pid for e in f.events)
    finally:
        TestCgroups.write(cgroups.path(cg), "memory.oom_control", "0")


@pytest.mark.parametrize("name", ["café", "x\udcffy"], ids=["utf8", "byte-ff"])
def test_kernel_kill_in_a_memcg_named_not_ascii(
    cgroups: TestCgroups, tmp_path: Path, name: str
) -> None:
    """The kernel writes ``caf\\xc3\\xa9`` in /dev/kmsg (it escapes every byte from 0x7f
    up): the kill is journaled in ``café`` itself — events of that cgroup show it and its
    counters are complete — and a name that is not UTF-8 is the path the directory has."""
    state = tmp_path / "state"
    cg = cgroups.make(name, limit=32 << 20)
    assert os.fsencode(cgroups.path(cg)).endswith(os.fsencode(name))
    g = grower(cgroups, cg)
    assert g.wait(timeout=30) == -9
    kills = json.loads(cli_json(state, "events", cg, "--json"))["events"]
    assert [(k["kind"], k["cgroup"]) for k in kills if k.get("pid") == g.pid] == [("oom_kill", cg)]
    ours = [r for r in Journal(state).read() if r["kind"] == "oom_kill" and r.get("pid") == g.pid]
    assert [r["cgroup"] for r in ours] == [cg]
    (c,) = json.loads(cli_json(state, "counters", cg, "--json"))["cgroups"]
    assert c["local"]["oom_kill"] == 1  # v2 has more keys (oom, oom_group_kill)
    assert c["by_cause"] == {"system": 0, "memcg": 1, "user": 0}
    assert c["complete"] is True
