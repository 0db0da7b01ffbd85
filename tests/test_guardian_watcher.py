"""The guardian's resident part as a bash watcher (issue 22, daemon/guardwatch.py), against
the real v1 kernel and real processes: the daemon starts bash on a pipe only it writes
to (no hook inherits the write end: a daemon SIGKILLed while its hook runs is released
at once, by the pipe's end of file); the watcher takes hostile state directories and
cgroup paths as data; a stopped "daemon" is released, taken back and released at its
death; without bash the Python guardian does the job."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from memcgctl.daemon import guardian, guardwatch
from memcgctl.daemon import main as daemon_main
from memcgctl.env import Env
from memcgctl.kernel.procfs import ProcFs
from memcgctl.vocab.cgpath import CgroupPath
from tests.realkernel import TestCgroups, wait_until
from tests.test_daemon_footprint import NEVER, daemon_env
from tests.test_daemon_kernel import (
    CLAIM,
    MARK,
    Daemon,
    daemons,  # noqa: F401
    grower,
    jobs,  # noqa: F401
    oom_control,
    set_xattr,
)

pytestmark = pytest.mark.kernel

O_ACCMODE, O_NONBLOCK, O_CLOEXEC = 0o3, 0o4000, 0o2000000
F_GETPIPE_SZ = 1032


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_bytes().rsplit(b")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


def guardian_of(pid: int) -> int:
    """The guardian the process ``pid`` started (waited for)."""
    found: list[int] = []

    def look() -> bool:
        found[:] = [c for c in children_of(pid) if b"guard" in cmdline(c)]
        return len(found) == 1

    wait_until(look, "the guardian process")
    return found[0]


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def pipe_fds(pid: int) -> dict[int, tuple[str, int]]:
    """The process's pipe fds: fd -> (``pipe:[inode]``, its open flags)."""
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        if link.startswith("pipe:"):
            flags = next(line for line in info.splitlines() if line.startswith("flags:"))
            out[int(fd)] = (link, int(flags.split()[1], 8))
    return out


def session(sid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = Path(f"/proc/{p}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(stat[3]) == sid:
                out.append(int(p))
    return out


def the_watchers_pipe(daemon: int, watcher: int) -> str:
    """The watcher holds one pipe fd, the read end, on a pipe whose only write end is
    the daemon's (close-on-exec, non-blocking); its inode."""
    assert os.readlink(f"/proc/{watcher}/exe").endswith("/bash")
    # (besides stderr, a pipe here: the tests read it)
    mine = [v for fd, v in pipe_fds(watcher).items() if fd > 2]
    assert len(mine) == 1, mine
    link, flags = mine[0]
    assert flags & O_ACCMODE == os.O_RDONLY
    ends = [f for lk, f in pipe_fds(daemon).values() if lk == link]
    assert len(ends) == 1 and ends[0] & O_ACCMODE == os.O_WRONLY, ends
    assert ends[0] & O_CLOEXEC and ends[0] & O_NONBLOCK, oct(ends[0])
    return link


def test_no_hook_inherits_the_pipe_a_sigkill_mid_hook_is_released_at_once(
    cgroups: TestCgroups,
    jobs: dict[str, str],  # noqa: F811
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    """A pre-kill hook that sleeps runs while the daemon is SIGKILLed: the hook holds no
    end of the watcher's pipe, so the pipe's end of file comes with the daemon's death
    and the watcher releases while the hook still sleeps (with a leaked write end it
    would wait for the hook's exit, or its stale time)."""
    top = jobs["top"]
    set_xattr(cgroups, top, "oom_delay_ms", "20000")
    d = Daemon(
        tmp_path / "state", cgroups.parent, "--pre-kill", "sleep 100; :", "--hook-timeout", "60s"
    )
    daemons.append(d)
    hook = 0
    try:
        d.wait_for("daemon_took_over", top)
        watcher = guardian_of(d.proc.pid)
        link = the_watchers_pipe(d.proc.pid, watcher)
        maps = Path(f"/proc/{watcher}/maps").read_text()
        assert "python" not in maps  # bash alone, until it acts
        g = grower(cgroups, jobs["low"])
        _, started = d.wait_for("hook_started", top, timeout=30)
        hook = int(started.split("hook_pid=")[1].split()[0])
        wait_until(lambda: len(session(hook)) >= 1, "the hook running")
        for p in session(hook):  # the hook's shell and its sleep
            assert link not in [lk for lk, _ in pipe_fds(p).values()], p
        d.stop(signal.SIGKILL)
        assert g.wait(timeout=15) == -signal.SIGKILL  # the kernel decides again
        _, line = d.wait_for("guardian:", None)
        assert "died" in line and top in line and "oom_kill_disable=0" in line, line
        assert session(hook), "the hook still sleeps: the release did not wait for it"
        wait_until(lambda: not Path(f"/proc/{watcher}").exists(), "the watcher gone")
        assert MARK not in os.listxattr(cgroups.path(top))
        assert CLAIM not in os.listxattr(cgroups.path(cgroups.parent))
        assert not list((tmp_path / "state").glob("daemon-*.heartbeat"))
    finally:
        if hook and session(hook):
            os.killpg(hook, signal.SIGKILL)


HOSTILE = "a b 'q\" $(touch pwned) `touch pwned` ${HOME};x"  # (the kernel refuses a \n)
HOSTILE_DIR = HOSTILE + "\nnl"


def test_hostile_state_dir_and_root_are_data(
    cgroups: TestCgroups,
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    """A state directory and a --root with spaces, quotes, ``$(...)``, backquotes (and
    a newline: the state directory; the kernel refuses one in a cgroup's name): the
    watcher passes them on as they are (the release finds the marks below that root
    and the heartbeat in that directory) and runs nothing they hold."""
    root = cgroups.make(HOSTILE)
    top = cgroups.make(f"{HOSTILE}/jobs", limit=96 << 20)
    low = cgroups.make(f"{HOSTILE}/jobs/low", limit=None)
    set_xattr(cgroups, top, "oom_delay_ms", "60000")
    state = tmp_path / HOSTILE_DIR / HOSTILE_DIR
    state.mkdir(parents=True)
    d = Daemon(state, root)
    daemons.append(d)
    _, line = d.wait_for("daemon_took_over", None)  # (the cgroup quoted: matched here)
    assert line.endswith('x/jobs" delay_ms=60000 mode=oom'), line
    watcher = guardian_of(d.proc.pid)
    args = cmdline(watcher).split(b"\0")
    assert str(state).encode() in args and root.encode() in args  # as they are
    the_watchers_pipe(d.proc.pid, watcher)
    assert list(state.glob("daemon-*.heartbeat"))
    g = grower(cgroups, low)
    d.wait_for("under_oom", None)
    d.stop(signal.SIGKILL)
    assert g.wait(timeout=15) == -signal.SIGKILL
    _, line = d.wait_for("guardian:", None)
    assert "died" in line and "oom_kill_disable=0" in line, line
    assert oom_control(cgroups, top)["oom_kill_disable"] == 0
    assert MARK not in os.listxattr(cgroups.path(top))
    gone = lambda: not [*state.glob("daemon-*.heartbeat"), *state.glob("daemon-*.released")]  # noqa: E731
    wait_until(gone, "the heartbeat removed")
    assert not list(Path.cwd().glob("pwned")) and not list(tmp_path.rglob("pwned"))


@pytest.fixture
def sleeper() -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A stand-in daemon and its instance id."""
    p = subprocess.Popen(["sleep", "120"])
    proc = ProcFs(Path("/proc"))
    try:
        yield p, f"{proc.boot_id()}/{p.pid}/{proc.start_time(p.pid)}"
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.wait()


def reap(pid: int, timeout: float = 20.0) -> int:
    """Wait for our child ``pid`` to exit; its exit status."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"{pid} did not exit")


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0].decode()


@contextlib.contextmanager
def watching(
    cgroups: TestCgroups, state: Path, daemon_pid: int, instance: str, bash: str | None = ""
) -> Iterator[tuple[guardian.Heartbeat, int]]:
    """The guardian as the daemon starts it, over a stand-in daemon whose heartbeat (and
    pipe) this process holds: (the heartbeat, the guardian's pid); the pipe closed and
    the guardian gone afterwards."""
    env = Env(cgroup_root=None, proc_root=Path("/proc"), state_dir=state)
    hb = guardian.Heartbeat(str(state), daemon_pid)
    daemon_main.start_guardian(env, CgroupPath(cgroups.parent), instance, hb, bash=bash)
    watcher = guardian_of(os.getpid())
    try:
        yield hb, watcher
    finally:
        hb.unpipe()
        if Path(f"/proc/{watcher}").exists():
            os.kill(watcher, signal.SIGKILL)
            os.waitpid(watcher, 0)


def test_the_watcher_releases_a_stop_takes_it_back_and_ends_at_the_pipes_eof(
    cgroups: TestCgroups, tmp_path: Path, sleeper: tuple[subprocess.Popen[bytes], str]
) -> None:
    """The watcher as the daemon starts it, over a stand-in daemon (a sleep) whose
    pipe the test writes: beats keep it quiet; stopped after beating, it is released
    once (the note) and waits; a beat takes it back; silent while running, it is hung:
    released again; the end of file (every write end closed) is a death: the release with ``died``, heartbeat and note removed, exit 0."""
    p, instance = sleeper
    note = Path(guardian.released_path(str(tmp_path), p.pid))
    with watching(cgroups, tmp_path, p.pid, instance) as (hb, watcher):
        the_watchers_pipe(os.getpid(), watcher)
        for _ in range(4):  # beating: nothing happens
            hb.beat(0.0, force=True)
            time.sleep(guardian.BEAT_S)
        assert not note.exists() and proc_state(watcher) == "S"
        os.kill(p.pid, signal.SIGSTOP)
        wait_until(note.exists, "the released note", timeout=guardian.STALE_S + 15)
        note.unlink()  # the daemon would find it when it runs again
        time.sleep(guardian.STALE_S + 0.5)  # released once: it waits for a beat now
        assert not note.exists()
        os.kill(p.pid, signal.SIGCONT)
        hb.beat(0.0, force=True)  # running again: watched as before
        time.sleep(0.5)
        hb.beat(0.0, force=True)
        assert Path(f"/proc/{watcher}").exists() and not note.exists()
        assert proc_state(p.pid) != "T"
        wait_until(note.exists, "a hang released", timeout=guardian.STALE_S + 15)  # silent
        note.unlink()
        hb.beat(0.0, force=True)  # back from the hang
        time.sleep(0.5)
        p.kill()  # the daemon's death: its write end closes with it (here: ours)
        p.wait()
        hb.unpipe()
        assert reap(watcher) == 0
        assert not Path(hb.path).exists() and not note.exists()


def test_before_the_first_beat_a_stop_is_seen_by_polling(
    cgroups: TestCgroups, tmp_path: Path, sleeper: tuple[subprocess.Popen[bytes], str]
) -> None:
    """No beat yet (the first rescan): no hang is taken, but a stop is seen within
    STOPPED_POLLS looks; the pid's death without the pipe's end of file (a write end
    elsewhere) is seen at the next look, by the start time."""
    p, instance = sleeper
    note = Path(guardian.released_path(str(tmp_path), p.pid))
    with watching(cgroups, tmp_path, p.pid, instance) as (hb, watcher):
        time.sleep(guardian.STALE_S + 1)  # silent, running: not a hang before a beat
        assert not note.exists()
        os.kill(p.pid, signal.SIGSTOP)
        wait_until(note.exists, "the released note", timeout=15)
        hb.beat(0.0, force=True)  # back
        os.kill(p.pid, signal.SIGCONT)
        p.kill()
        p.wait()
        assert reap(watcher) == 0  # gone by its stat, the write end still open here
        assert not Path(hb.path).exists() and not note.exists()


def test_a_pipe_that_ends_while_the_daemon_runs_hands_over_to_the_python_guardian(
    cgroups: TestCgroups,
    tmp_path: Path,
    sleeper: tuple[subprocess.Popen[bytes], str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """End of file while the daemon still runs (its pipe lost, a read that failed): no
    living daemon's marks are taken; the release execs the Python guardian (the same
    process), which releases at the real death."""
    p, instance = sleeper
    with watching(cgroups, tmp_path, p.pid, instance) as (hb, watcher):
        hb.beat(0.0, force=True)
        hb.unpipe()  # the pipe ends, the "daemon" runs on
        wait_until(
            lambda: (
                b"memcgctl.daemon.guardian" in cmdline(watcher)
                and "python" in os.readlink(f"/proc/{watcher}/exe")
            ),
            "the Python guardian in the watcher's process",
            timeout=30,
        )
        assert "the Python guardian takes over" in capfd.readouterr().err
        assert Path(hb.path).exists() and p.poll() is None  # nothing released, nothing removed
        p.kill()
        p.wait()
        assert reap(watcher) == 0
        assert not Path(hb.path).exists()


def test_without_bash_the_python_guardian_releases(
    cgroups: TestCgroups,
    jobs: dict[str, str],  # noqa: F811
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    """A PATH without bash: the daemon starts the Python guardian (pidfd and heartbeat
    file), which releases a SIGKILLed daemon's memcg at once."""
    empty = tmp_path / "bin"
    empty.mkdir()
    top = jobs["top"]
    set_xattr(cgroups, top, "oom_delay_ms", "60000")
    d = Daemon(tmp_path / "state", cgroups.parent, env={**daemon_env(), "PATH": str(empty)})
    daemons.append(d)
    d.wait_for("daemon_took_over", top)
    g_pid = guardian_of(d.proc.pid)
    assert b"memcgctl.daemon.guardian" in cmdline(g_pid)
    assert os.readlink(f"/proc/{g_pid}/exe") == os.path.realpath(sys.executable)
    assert not [fd for fd in pipe_fds(g_pid) if fd > 2]  # no pipe: the file's mtime
    g = grower(cgroups, jobs["low"])
    d.wait_for("under_oom", top)
    d.stop(signal.SIGKILL)
    assert g.wait(timeout=15) == -signal.SIGKILL
    _, line = d.wait_for("guardian:", None)
    assert "died" in line and "oom_kill_disable=0" in line, line


def test_a_bash_that_cannot_start_falls_back_to_python(
    cgroups: TestCgroups,
    tmp_path: Path,
    sleeper: tuple[subprocess.Popen[bytes], str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    """An injected bash that does not exist: one warning, the Python guardian, no pipe
    kept; it watches the stand-in daemon and cleans up at its death."""
    p, instance = sleeper
    missing = str(tmp_path / "no" / "bash")
    with watching(cgroups, tmp_path, p.pid, instance, bash=missing) as (hb, g_pid):
        err = capfd.readouterr().err
        assert err.startswith("<4>no bash guardian (") and "starting the Python one" in err
        assert b"memcgctl.daemon.guardian" in cmdline(g_pid)
        assert not [fd for fd in pipe_fds(g_pid) if fd > 2]
        hb.beat(0.0, force=True)  # the file alone: no pipe to write
        p.kill()
        p.wait()
        assert reap(g_pid) == 0
        assert not Path(hb.path).exists()


def test_find_bash_takes_absolute_path_entries_only(tmp_path: Path) -> None:
    exe = tmp_path / "bash"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert guardwatch.find_bash({"PATH": str(tmp_path)}) == str(exe)
    assert guardwatch.find_bash({"PATH": f"{tmp_path / 'none'}"}) is None
    os.chdir(tmp_path)
    try:
        assert guardwatch.find_bash({"PATH": "."}) is None  # not a relative entry
    finally:
        os.chdir(Path(__file__).resolve().parent.parent)


def test_the_release_interpreter_imports_only_what_restoring_needs(
    cgroups: TestCgroups, tmp_path: Path, sleeper: tuple[subprocess.Popen[bytes], str]
) -> None:
    """The command line the watcher runs to act: ``python3 -S`` with the release module
    alone (no configuration, decisions, rendering, click or tables)."""
    p, instance = sleeper
    args = ["/proc", "", str(tmp_path), cgroups.parent, instance, guardian.STOPPED]
    argv = guardian.light_argv(sys.executable, "memcgctl.daemon.guardrelease", "main", args)
    i = argv.index("-c") + 1
    out = tmp_path / "modules"
    dump = f"lambda: open({str(out)!r}, 'w').write(chr(10).join(sorted(sys.modules)))"
    argv[i] = f"import atexit,sys;atexit.register({dump});" + argv[i]
    r = subprocess.run(argv, env=daemon_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    mods = set(out.read_text().split())
    assert "memcgctl.daemon.guardrelease" in mods and "site" not in mods
    heavy = {"memcgctl.daemon.main", "memcgctl.daemon.core", "memcgctl.daemon.config"}
    assert not mods & (NEVER | heavy | {"subprocess"}), sorted(mods & (NEVER | heavy))
    assert Path(guardian.released_path(str(tmp_path), p.pid)).exists()  # the note


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["/proc", "", "/tmp"], 2, "want PROC_ROOT CGROUP_ROOT STATE_DIR ROOT INSTANCE STATE"),
        (["/proc", "", "/tmp", "/", "b/1/1", "asleep"], 2, "want PROC_ROOT"),
        (["/proc", "", "/tmp", "/", "b/x/1", "died"], 2, "'b/x/1': not an instance id"),
        (  # the root removed meanwhile: one line, no traceback, no note
            ["/proc", "", "STATE", "/memcgctl-no-such-root", "b/1/1", "stopped"],
            1,
            "daemon 1 stopped: /memcgctl-no-such-root: no such cgroup",
        ),
    ],
)
def test_the_release_command_line_says_what_is_wrong_in_one_line(
    tmp_path: Path, args: list[str], code: int, said: str
) -> None:
    from memcgctl.daemon import guardrelease

    args = [str(tmp_path) if a == "STATE" else a for a in args]
    argv = guardian.light_argv(sys.executable, "memcgctl.daemon.guardrelease", "main", args)
    r = subprocess.run(argv, env=daemon_env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == code
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("<3>guardian: ") and said in lines[0], r.stderr
    assert not list(tmp_path.iterdir())  # no note
    assert guardrelease.main(args) == code  # the same in this process


def test_a_full_pipe_costs_no_beat(tmp_path: Path) -> None:
    """Nobody reads (a stopped watcher): the beats fill the pipe, then each write gets
    EAGAIN, which the beat ignores; the file is still touched.  The read end is handed
    over blocking (bash's ``read -t`` waits on it), both ends close-on-exec."""
    hb = guardian.Heartbeat(str(tmp_path), os.getpid())
    r = hb.pipe()
    try:
        assert os.get_blocking(r) and not os.get_inheritable(r)
        size = fcntl.fcntl(r, F_GETPIPE_SZ)
        for i in range(size + 10):
            hb.beat(float(i), force=True)
        assert os.stat(hb.path).st_mtime > 0
        os.set_blocking(r, False)
        got = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(r, 65536):
                got += chunk
        assert got == b"." * size  # full, then nothing more written (EAGAIN)
        hb.beat(0.0, force=True)  # room again: the next beat is there
        assert os.read(r, 16) == b"."
    finally:
        os.close(r)
        hb.unpipe()
        hb.close()
