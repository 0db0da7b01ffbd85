"""The guardian is a bare interpreter running one file that imports only ``os``; it
waits for the daemon's pipe to close, then execs the full ``daemon --guard``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from memcgctl.commands.daemon import guardian_argv
from memcgctl.daemon import guardian
from memcgctl.env import Env
from memcgctl.vocab.cgpath import CgroupPath

GUARDIAN = str(guardian.__file__)


def _imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines."""
    return {
        line.split("|")[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:") and "|" in line and "imported package" not in line
    } - {"package"}


def test_the_guardian_imports_only_os() -> None:
    bare = subprocess.run(  # with -S not even os is loaded: the guardian's one import
        [sys.executable, "-S", "-I", "-X", "importtime", "-c", "import os"],
        capture_output=True,
        text=True,
        check=True,
    )
    r, w = os.pipe()
    os.close(w)  # the "daemon" is already gone: the guardian execs at once
    g = subprocess.run(
        [sys.executable, "-S", "-I", "-X", "importtime", GUARDIAN, str(r), "/bin/true"],
        capture_output=True,
        text=True,
        pass_fds=(r,),
        check=False,
    )
    os.close(r)
    assert g.returncode == 0, g.stderr
    assert "os" in _imported(bare.stderr) and "os" in _imported(g.stderr)
    assert _imported(g.stderr) <= _imported(bare.stderr), _imported(g.stderr) - _imported(
        bare.stderr
    )


def test_the_guardian_execs_its_program_only_when_the_pipe_closes(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    r, w = os.pipe()
    g = subprocess.Popen(
        [
            sys.executable,
            "-S",
            "-I",
            GUARDIAN,
            str(r),
            sys.executable,
            "-c",
            f"open({str(marker)!r}, 'w').write('released')",
        ],
        pass_fds=(r,),
    )
    os.close(r)
    try:
        time.sleep(0.5)
        assert g.poll() is None and not marker.exists()  # the daemon (w) still lives
        os.close(w)  # the daemon dies: every write end is closed
        w = -1
        assert g.wait(timeout=30) == 0
        assert marker.read_text() == "released"
    finally:
        if w >= 0:
            os.close(w)
        if g.poll() is None:
            g.kill()
            g.wait()


def test_the_guardian_rejects_a_bad_command_line() -> None:
    g = subprocess.run(
        [sys.executable, "-S", "-I", GUARDIAN, "nofd"], capture_output=True, text=True, check=False
    )
    assert g.returncode == 2 and "usage" in g.stderr and "Traceback" not in g.stderr


def test_the_daemon_starts_the_guardian_bare_then_the_full_release() -> None:
    env = Env(cgroup_root=Path("/tmp/cg"), proc_root=Path("/tmp/proc"))
    argv = guardian_argv(env, CgroupPath("/jobs"), "boot/42/7", 9)
    assert argv[:5] == [sys.executable, "-S", "-I", GUARDIAN, "9"]
    full = argv[5:]
    assert full[:3] == [sys.executable, "-m", "memcgctl"]
    assert full[full.index("--proc-root") + 1] == "/tmp/proc"
    assert full[full.index("--cgroup-root") + 1] == "/tmp/cg"
    assert full[-5:] == ["daemon", "--root", "/jobs", "--guard", "boot/42/7"]
