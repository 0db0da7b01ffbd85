"""explain-kill on cgroup v2: a real memory.max OOM in the guest kernel, read from the
live kernel log and from a saved copy of it, puts the kernel's victim first with the
verdict "matches"; with the live badness of the cgroups that still exist, the priority
counterfactual names the process of the low-badness job instead."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from click.testing import CliRunner

from memcgctl.cli import cli
from tests.realkernel import HELPERS, TestCgroups
from tests.test_daemon_kernel import set_xattr
from tests.test_postmortem_kernel import _kmsg_dump

MIB = 1 << 20


def test_explain_kill_on_a_v2_memcg_oom(cgroups: TestCgroups, tmp_path: Path) -> None:
    top = cgroups.make("pm", limit=64 * MIB)
    low = cgroups.make("pm/low", limit=None)
    high = cgroups.make("pm/high", limit=None)
    set_xattr(cgroups, low, "badness", "100")
    set_xattr(cgroups, high, "badness", "900")
    small = cgroups.hog(low, mib=8)  # the priority policy's pick: the lowest badness
    grower = cgroups.spawn(high, [sys.executable, str(HELPERS / "grow.py"), "1024", "200"])
    assert grower.wait(timeout=60) == -signal.SIGKILL  # the kernel's pick: the biggest
    assert small.poll() is None
    saved = tmp_path / "kmsg.log"
    saved.write_bytes(_kmsg_dump())

    state = ["--state-dir", str(tmp_path / "state")]
    live = CliRunner().invoke(cli, [*state, "explain-kill", str(grower.pid), "--json"])
    assert live.exit_code == 0, live.output
    doc = json.loads(live.output)
    assert doc["verdict"] == "matches", doc["why"]
    assert doc["killed_pids"] == [grower.pid] and doc["oom_root"] == top
    assert doc["kernel"]["candidates"][0]["pid"] == grower.pid
    # the live badness (xattrs of pm/low and pm/high) decides the counterfactual
    assert doc["priority"]["victim"]["pid"] == small.pid, doc["priority_notes"]

    text = CliRunner().invoke(cli, [*state, "explain-kill", str(grower.pid)])
    assert text.exit_code == 0, text.output
    assert f"pid {small.pid}" in text.output

    from_log = CliRunner().invoke(
        cli, [*state, "explain-kill", str(grower.pid), "--from", str(saved), "--json"]
    )
    assert from_log.exit_code == 0, from_log.output
    saved_doc = json.loads(from_log.output)
    assert saved_doc["verdict"] == "matches" and saved_doc["oom_root"] == top
    assert [c["pid"] for c in saved_doc["kernel"]["candidates"]] == [
        c["pid"] for c in doc["kernel"]["candidates"]
    ]
