"""What the daemon keeps resident: mlockall locks pages as they are touched (MCL_ONFAULT),
falling back to the older flags on kernels that refuse it; and a real daemon's import
set holds nothing it does not use (no tables, no OpenSSL, no tempfile)."""

from __future__ import annotations

import ctypes
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from memcgctl.daemon import guardian
from memcgctl.daemon import main as daemon_main
from memcgctl.kernel.procfs import ProcFs
from memcgctl.state.daemonlock import lock_path
from memcgctl.vocab.cgpath import CgroupPath
from tests.realkernel import HELPERS, TestCgroups

REPO = Path(__file__).resolve().parent.parent

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4


class FakeLibc:
    def __init__(self, refuse: set[int]) -> None:
        self.refuse = refuse
        self.calls: list[int] = []

    def mlockall(self, flags: int) -> int:
        self.calls.append(flags)
        return -1 if flags in self.refuse else 0


@pytest.mark.parametrize(
    ("refuse", "calls"),
    [
        (set(), [MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT]),
        (  # a kernel before 4.4: EINVAL for MCL_ONFAULT, then the old flags
            {MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT},
            [MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, MCL_CURRENT | MCL_FUTURE],
        ),
    ],
)
def test_mlockall_locks_on_fault_first(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    refuse: set[int],
    calls: list[int],
) -> None:
    libc = FakeLibc(refuse)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: libc)
    daemon_main.mlockall()
    assert libc.calls == calls
    assert "mlockall failed" not in capsys.readouterr().err


def test_mlockall_refused_altogether_is_one_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    libc = FakeLibc({MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, MCL_CURRENT | MCL_FUTURE})
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: libc)
    daemon_main.mlockall()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mlockall failed" in err[0] and "continuing" in err[0]


class FakeMalloc:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return 1


def test_one_malloc_arena_for_all_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = FakeMalloc()
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: libc)
    daemon_main.one_malloc_arena()
    assert libc.calls == [(-8, 1)]  # mallopt(M_ARENA_MAX, 1)


def test_no_mallopt_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: object())  # a libc without it
    daemon_main.one_malloc_arena()


def test_lock_names_are_sha256_without_openssl() -> None:
    """The lock files keep their names (daemons of both versions exclude each other)."""
    cg = CgroupPath("/kubepods/burstable/pod\u00e9")
    digest = hashlib.sha256(str(cg).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    assert lock_path(Path("/s"), cg) == Path(f"/s/daemon-{digest}.lock")


# -- what the running daemon imports ----------------------------------------------------

# What the daemon does not use, and must therefore not keep resident (issue 22): the
# table libraries and our output module, psutil, OpenSSL's hashlib (a lock file's name),
# tempfile and what it drags in (shutil, bz2, lzma, random), ctypes.util; subprocess
# only for hooks or the guardian, socket only under systemd.
NEVER = {"rich", "tabulate", "psutil", "_hashlib", "tempfile", "shutil", "bz2", "lzma"}
NEVER |= {"random", "ctypes.util", "argparse", "memcgctl.render.output"}
UNLESS_USED = {"subprocess", "socket"}


def imported_by_daemon(tmp_path: Path, root: str, *extra: str, env: dict[str, str]) -> set[str]:
    out = tmp_path / "modules"
    # -S: this interpreter's site-packages without their .pth hooks (a host's own
    # additions, such as a certificate bundle imported at start-up, are not ours)
    argv = [sys.executable, "-S", str(HELPERS / "modules_at_exit.py"), str(out)]
    argv += ["-m", "memcgctl"]
    argv += ["--state-dir", str(tmp_path / "state"), "daemon", "--root", root, *extra]
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # enforcing: its first rescan took the memcg over
            if "daemon_took_over" in line:
                break
        else:
            raise AssertionError("the daemon stopped before taking over")
        time.sleep(1.0)  # the journal thread has written the record
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0
    return set(out.read_text().split())


def daemon_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    path = [str(REPO), *(p for p in sys.path if p and os.path.isdir(p))]
    return {**env, "PYTHONPATH": os.pathsep.join(path), **extra}


def test_the_running_daemon_imports_only_what_it_uses(cgroups: TestCgroups, tmp_path: Path) -> None:
    cg = cgroups.make("managed", limit=64 << 20)
    os.setxattr(cgroups.path(cg), "trusted.memcgctl.oom_delay_ms", b"1000")
    mods = imported_by_daemon(
        tmp_path, cgroups.parent, "--guardian=none", "--rescan", "200ms", env=daemon_env()
    )
    assert "memcgctl.daemon.loop" in mods and "memcgctl.state.journal" in mods  # it ran
    assert not mods & (NEVER | UNLESS_USED), sorted(mods & (NEVER | UNLESS_USED))


def test_under_systemd_it_adds_the_socket_and_nothing_else_unused(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    cg = cgroups.make("managed", limit=64 << 20)
    os.setxattr(cgroups.path(cg), "trusted.memcgctl.oom_delay_ms", b"1000")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    try:
        env = daemon_env(NOTIFY_SOCKET=str(tmp_path / "notify"), WATCHDOG_USEC="10000000")
        mods = imported_by_daemon(tmp_path, cgroups.parent, "--guardian=systemd", env=env)
    finally:
        sock.close()
    assert "socket" in mods
    assert not mods & (NEVER | {"subprocess"}), sorted(mods & (NEVER | {"subprocess"}))


def test_an_idle_guardian_process_imports_no_memcgctl_machinery(tmp_path: Path) -> None:
    """The guardian process (python3 -m memcgctl.daemon.guardian, as the daemon starts
    it) watching a live "daemon": only its own module and the standard library's os,
    select and time are loaded until it must act."""
    daemon = subprocess.Popen(["sleep", "60"])
    out = tmp_path / "modules"
    try:
        proc_fs = ProcFs(Path("/proc"))
        instance = f"{proc_fs.boot_id()}/{daemon.pid}/{proc_fs.start_time(daemon.pid)}"
        guardian.Heartbeat(str(tmp_path), daemon.pid)  # starting: not judged by its beat
        argv = guardian.argv(sys.executable, "/proc", "", str(tmp_path), "/", instance)
        assert argv[argv.index("-m") + 1] == "memcgctl.daemon.guardian"
        helper = [sys.executable, "-S", str(HELPERS / "modules_at_exit.py"), str(out)]
        g = subprocess.Popen([*helper, *argv[argv.index("-m") :]], env=daemon_env())
        time.sleep(1.5)  # several looks at the daemon
        assert g.poll() is None
        g.send_signal(signal.SIGINT)  # KeyboardInterrupt: atexit writes what it imported
        g.wait(timeout=10)
    finally:
        daemon.kill()
        daemon.wait()
    mods = set(out.read_text().split())
    ours = {m for m in mods if m.startswith("memcgctl")}
    assert ours == {"memcgctl", "memcgctl.daemon"}, ours  # (the guardian is __main__)
    assert not mods & (NEVER | UNLESS_USED | {"json", "pathlib", "click", "threading"})


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["/proc"], "want PROC_ROOT CGROUP_ROOT STATE_DIR ROOT INSTANCE"),
        (["/proc", "", "/tmp", "/", "boot/notapid/1"], "'boot/notapid/1': not an instance id"),
    ],
)
def test_the_guardian_refuses_a_bad_command_line(
    capfd: pytest.CaptureFixture[str], args: list[str], said: str
) -> None:
    assert guardian.main(args) == 2
    assert capfd.readouterr().err == f"<3>guardian: {said}\n"
