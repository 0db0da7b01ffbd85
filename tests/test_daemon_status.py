"""``memcgctl status`` against a real daemon on v1 (issue 24): what it manages, an OOM
episode in progress while the delay runs, the counts after it, the file gone after a
stop; and the warning when the CLI's state directory is not the running daemon's."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from memcgctl.cli import cli
from memcgctl.state.daemonstatus import read_statuses
from memcgctl.vocab.units import format_duration_ms
from tests.realkernel import TestCgroups, wait_until
from tests.test_daemon_kernel import Daemon, daemons, grower, jobs, set_xattr  # noqa: F401

pytestmark = pytest.mark.kernel


def status(state: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--state-dir", str(state), "status", *args])


def _status_if(state: Path, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
    """The status document when ``ok`` says so (for wait_until)."""
    doc = status_doc(state)
    return doc if ok(doc) else None


def status_doc(state: Path) -> dict[str, Any]:
    r = status(state, "--json")
    assert r.exit_code == 0, r.output
    (doc,) = json.loads(r.stdout)["daemons"]
    assert isinstance(doc, dict)
    return doc


def test_status_of_a_real_daemon_through_an_oom(
    cgroups: TestCgroups,
    jobs: dict[str, str],  # noqa: F811
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    r = status(tmp_path)
    assert r.exit_code == 1 and "no running daemon" in r.stderr
    set_xattr(cgroups, jobs["top"], "oom_delay_ms", "3000")
    d = Daemon(tmp_path, cgroups.parent)
    daemons.append(d)
    d.wait_for("daemon_took_over", jobs["top"])
    wait_until(lambda: (x := read_statuses(tmp_path)) and x[0]["managed"], "a status file")
    doc: dict[str, Any] = status_doc(tmp_path)
    assert (doc["pid"], doc["root"], doc["policy"], doc["dry_run"]) == (
        d.proc.pid,
        cgroups.parent,
        "priority",
        False,
    )
    assert doc["hierarchy"]["version"] == 1
    (w,) = doc["managed"]
    assert (w["cgroup"], w["mode"], w["domain"], w["delay_ms"], w["episode"]) == (
        jobs["top"],
        "oom",
        jobs["top"],
        3000,
        None,
    )
    assert doc["episodes"] == 0 and doc["counts"]["daemon_took_over"] == 1
    text = status(tmp_path).stdout
    assert f"daemon pid {d.proc.pid}: running since" in text
    assert f"{jobs['top']}  oom  delay {format_duration_ms(3000)}  ok" in text

    g = grower(cgroups, jobs["low"])
    d.wait_for("under_oom", jobs["top"])
    doc = wait_until(lambda: _status_if(tmp_path, lambda x: x["episodes"] == 1), "the episode")
    (w,) = doc["managed"]
    assert w["episode"]["rounds"] == 0 and 0 < w["episode"]["delay_left_ms"] <= 3000
    assert "UNDER OOM for" in status(tmp_path).stdout
    assert g.wait(timeout=15) == -signal.SIGKILL
    d.wait_for("oom_resolved", jobs["top"])
    doc = wait_until(
        lambda: _status_if(tmp_path, lambda x: bool(x["counts"].get("oom_resolved"))),
        "the counts",
    )
    assert doc["episodes"] == 0
    assert doc["counts"]["under_oom"] == 1 and doc["counts"]["daemon_kill"] == 1
    assert os.stat(tmp_path / f"daemon-{d.proc.pid}.json").st_mode & 0o777 == 0o600
    assert d.stop() == 0
    assert not (tmp_path / f"daemon-{d.proc.pid}.json").exists()
    assert status(tmp_path).exit_code == 1


def test_a_dead_daemons_status_file_is_not_running(tmp_path: Path) -> None:
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    tmp_path.chmod(0o700)
    (tmp_path / "daemon-999999999.json").write_text(
        json.dumps({"pid": 999999999, "instance": f"{boot}/999999999/1", "root": "/"})
    )
    r = status(tmp_path, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["daemons"] == []


def test_a_state_dir_other_than_the_running_daemons_is_warned_about(
    cgroups: TestCgroups,
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The same pid read 700 with one directory and 500 with another: with a daemon
    running on the default directory, a command using another one says so (once)."""
    from memcgctl.env import Env

    default, other = tmp_path / "default", tmp_path / "other"
    d = Daemon(default, cgroups.parent)
    daemons.append(d)
    wait_until(lambda: read_statuses(default), "the daemon's status file")
    capsys.readouterr()
    env = Env(cgroup_root=cgroups.mount, state_dir=other, default_state_dir=default)
    env.registry.load()
    env.registry.load()
    (line,) = capsys.readouterr().err.splitlines()
    assert f"a running daemon (pid {d.proc.pid}, root {cgroups.parent})" in line
    assert str(default) in line and str(other) in line
    Env(cgroup_root=cgroups.mount, state_dir=default, default_state_dir=default).registry.load()
    assert capsys.readouterr().err == ""
    d.stop()
    Env(cgroup_root=cgroups.mount, state_dir=other, default_state_dir=default).registry.load()
    assert capsys.readouterr().err == ""  # stopped: nothing to disagree with


def test_status_as_nobody_with_roots_state_dir_says_permission() -> None:
    import shutil
    import tempfile

    from tests.test_hostile import _as_nobody

    base = Path(tempfile.mkdtemp(prefix="memcgctl-i24-"))
    try:
        base.chmod(0o755)
        state = base / "state"
        state.mkdir(mode=0o700)
        code, out, err = _as_nobody(lambda: status(state))
        assert code == 4, (out, err)
        assert "permission denied" in err and "run as root" in err
    finally:
        shutil.rmtree(base)
