"""Post-mortem against the real kernel: a real v1 memcg OOM, saved with ``dmesg``,
``dmesg -T`` and as raw kmsg records, read back with ``--from``, gives the same kill as
the live kernel log — and ``explain-kill`` puts the kernel's victim first.

Other engineers trigger OOMs on this machine too: everything is filtered by our pid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from tests.realkernel import HELPERS, TestCgroups

pytestmark = pytest.mark.kernel

KEYS = (
    "kind",
    "pid",
    "comm",
    "constraint",
    "oom_memcg",
    "cgroup",
    "anon_rss_kb",
    "file_rss_kb",
    "shmem_rss_kb",
    "oom_score_adj",
    "uid",
    "cause",
)


def _kills(output: str, pid: int) -> list[dict[str, Any]]:
    docs = [json.loads(line) for line in output.splitlines() if line.strip()]
    return [
        {k: d.get(k) for k in KEYS} for d in docs if d["kind"] == "oom_kill" and d["pid"] == pid
    ]


def _kmsg_dump() -> bytes:
    """The ring as raw /dev/kmsg records (what `cat /dev/kmsg` would save)."""
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    out = []
    try:
        while True:
            try:
                out.append(os.read(fd, 8192))
            except BlockingIOError:
                break
            except BrokenPipeError:
                continue
    finally:
        os.close(fd)
    return b"".join(r if r.endswith(b"\n") else r + b"\n" for r in out)


def test_saved_logs_give_the_live_kill(cgroups: TestCgroups, tmp_path: Path) -> None:
    if shutil.which("dmesg") is None:
        pytest.skip("no dmesg")
    cg = cgroups.make("postmortem", limit=32 << 20)
    cgroups.sleeper(cg)
    grower = cgroups.spawn(cg, [sys.executable, str(HELPERS / "grow.py"), "1024", "200"])
    assert grower.wait(timeout=60) == -9
    state = ["--state-dir", str(tmp_path / "state")]
    live = CliRunner().invoke(cli, [*state, "events", cg, "--json-lines"])
    assert live.exit_code == 0, live.output
    want = _kills(live.output, grower.pid)
    assert len(want) == 1 and want[0]["cgroup"] == cg
    saved = {
        "dmesg": subprocess.run(["dmesg"], capture_output=True, check=True).stdout,
        "dmesg-T": subprocess.run(["dmesg", "-T"], capture_output=True, check=True).stdout,
        "kmsg": _kmsg_dump(),
    }
    for name, data in saved.items():
        path = tmp_path / f"{name}.log"
        path.write_bytes(data)
        r = CliRunner().invoke(cli, ["events", "--from", str(path), "--json-lines"])
        assert r.exit_code == 0, r.output
        assert _kills(r.output, grower.pid) == want, name
        x = CliRunner().invoke(
            cli, ["explain-kill", str(grower.pid), "--from", str(path), "--json"]
        )
        assert x.exit_code == 0, x.output
        doc = json.loads(x.output)
        assert doc["verdict"] == "matches", (name, doc["why"])
        assert doc["kernel"]["candidates"][0]["pid"] == grower.pid
        assert doc["oom_root"] == cg
    live_x = CliRunner().invoke(cli, [*state, "explain-kill", str(grower.pid), "--json"])
    assert live_x.exit_code == 0, live_x.output
    doc = json.loads(live_x.output)
    assert doc["verdict"] == "matches" and doc["killed_pids"] == [grower.pid]
