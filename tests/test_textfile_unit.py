"""The shipped textfile-collector service and timer: the service's script writes
``counters --format prometheus`` atomically (a whole file or the old one, never half),
readable by node_exporter, and leaves nothing behind when memcgctl fails."""

from __future__ import annotations

import configparser
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

from tests.fakehost import FakeHost
from tests.promtext import parse_exposition

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "contrib/systemd"


def _unit(name: str) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string((UNITS / name).read_text())
    return cp


def _exec_start() -> list[str]:
    """ExecStart as systemd runs it ("$$" is a literal "$")."""
    return shlex.split(
        _unit("memcgctl-textfile.service")["Service"]["ExecStart"].replace("$$", "$")
    )


def _run(tmp_path: Path, target: Path, exit_code: int | None = None) -> int:
    """Run the service's script (memcgctl a shim: the real one on a fixture tree, or
    one that prints half a file and fails with ``exit_code``)."""
    tmp_path = tmp_path / f"run-{exit_code}"
    bindir = tmp_path / "bin"
    bindir.mkdir(parents=True)
    shim = bindir / "memcgctl"
    body = f'exec "{sys.executable}" -m memcgctl "$@"'
    if exit_code is not None:
        body = f"echo partial; exit {exit_code}"
    shim.write_text(f"#!/bin/sh\n{body}\n")
    shim.chmod(0o755)
    host = FakeHost(tmp_path / "host", version=1)
    host.cgroup("/batch", limit=64 << 20, oom_kill=2)
    (host.base / "kmsg").write_text("")
    env = {
        **os.environ,
        **host.cli_env(),
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),
    }
    argv = _exec_start()
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3].endswith("/memcgctl.prom")
    return subprocess.run([*argv[:3], str(target)], env=env, check=False).returncode


def test_the_service_writes_the_exposition_atomically(tmp_path: Path) -> None:
    out = tmp_path / "textfile"
    out.mkdir()
    target = out / "memcgctl.prom"
    assert _run(tmp_path, target) == 0
    fams = parse_exposition(target.read_text())
    assert fams["memcgctl_kernel_oom_kills"][("/batch", "local")] == 2
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in out.iterdir()] == ["memcgctl.prom"]
    # memcgctl fails: the previous file stays whole, no temporary file is left
    before = target.read_text()
    assert _run(tmp_path, target, exit_code=1) != 0
    assert target.read_text() == before
    assert [p.name for p in out.iterdir()] == ["memcgctl.prom"]


def test_the_timer_refreshes_often_and_is_installable() -> None:
    timer = _unit("memcgctl-textfile.timer")
    assert timer["Timer"]["OnUnitActiveSec"] == "15s"
    assert timer["Install"]["WantedBy"] == "timers.target"
    assert _unit("memcgctl-textfile.service")["Service"]["Type"] == "oneshot"
    data_files = (ROOT / "pyproject.toml").read_text()
    for name in ("memcgctl-textfile.service", "memcgctl-textfile.timer"):
        assert f"contrib/systemd/{name}" in data_files
        assert name in (ROOT / "MANIFEST.in").read_text()
