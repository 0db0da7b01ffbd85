"""What the daemon keeps resident: mlockall locks pages as they are touched (MCL_ONFAULT),
falling back to the older flags on kernels that refuse it; and a real daemon's import
set holds nothing it does not use (no tables, no OpenSSL, no tempfile)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from memcgctl.daemon import guardian
from memcgctl.daemon import main as daemon_main
from memcgctl.kernel import libc as libc_module
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
    monkeypatch.setattr(libc_module, "Libc", lambda: libc)
    daemon_main.mlockall()
    assert libc.calls == calls
    assert "mlockall failed" not in capsys.readouterr().err


def test_mlockall_refused_altogether_is_one_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    libc = FakeLibc({MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, MCL_CURRENT | MCL_FUTURE})
    monkeypatch.setattr(libc_module, "Libc", lambda: libc)
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
    monkeypatch.setattr(libc_module, "Libc", lambda: libc)
    daemon_main.one_malloc_arena()
    assert libc.calls == [(-8, 1)]  # mallopt(M_ARENA_MAX, 1)


def test_no_mallopt_is_no_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(libc_module, "Libc", object)  # a libc without it
    daemon_main.one_malloc_arena()


def test_lock_names_are_sha256_without_openssl() -> None:
    """The lock files keep their names (daemons of both versions exclude each other)."""
    cg = CgroupPath("/kubepods/burstable/pod\u00e9")
    digest = hashlib.sha256(str(cg).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    assert lock_path(Path("/s"), cg) == Path(f"/s/daemon-{digest}.lock")


# -- what the running daemon imports ----------------------------------------------------

# What the daemon does not use, and must therefore not keep resident (issue 22): the
# table libraries and our output module, psutil, OpenSSL's hashlib (a lock file's name),
# tempfile and what it drags in (shutil, bz2, lzma, random), ctypes.util; click, what it
# brings and the command modules (the command line execs the daemon's own interpreter);
# site and runpy (that interpreter runs with -S, -c); subprocess (the guardian is
# posix_spawned) unless hooks use it; socket never (under systemd: _socket alone).
NEVER = {"rich", "tabulate", "psutil", "_hashlib", "tempfile", "shutil", "bz2", "lzma"}
NEVER |= {"random", "ctypes.util", "argparse", "memcgctl.render.output"}
NEVER |= {"click", "gettext", "uuid", "platform", "site", "runpy", "memcgctl.cli"}
NEVER |= {"memcgctl.commands.common", "memcgctl.commands.daemon", "memcgctl.commands.examples"}
# the fifth pass (issue 22): datetime (the records' clock is time's; a saved log's dates
# are read by commands only)
NEVER |= {"datetime", "_datetime"}
# and threading, queue (the journal writer is a bare _thread with queue's C SimpleQueue);
# subprocess would bring threading back: only a daemon with hooks imports it
NEVER |= {"threading", "queue", "heapq"}
# and ctypes' Python half (kernel/libc.py calls libc through _ctypes)
NEVER |= {"ctypes", "ctypes._endian"}
# the sixth pass: dataclasses and the inspect it imports with ast, dis, tokenize (1.2 MiB;
# the records are vocab.structs'); copy and weakref came with them
NEVER |= {"dataclasses", "inspect", "ast", "_ast", "dis", "opcode", "tokenize", "token"}
NEVER |= {"linecache", "importlib.machinery", "copy", "weakref"}
# and typing (0.5 MiB): NamedTuple, Protocol, TypedDict and cast at run time are
# vocab.structs'; the daemon's modules write TYPE_CHECKING = False
NEVER |= {"typing", "_typing"}
UNLESS_USED = {"subprocess", "socket"}
IMPORT_TIME_HEADER = "import time: self [us] | cumulative | imported package"


def imported_by_daemon(tmp_path: Path, root: str, *extra: str, env: dict[str, str]) -> set[str]:
    """What the running daemon's interpreter imported: ``-X importtime``, which the
    command line passes on to the interpreter it execs; each interpreter prints its
    header line once, so the daemon's are the lines after the last one."""
    # -S: this interpreter's site-packages without their .pth hooks (a host's own
    # additions, such as a certificate bundle imported at start-up, are not ours)
    argv = [sys.executable, "-S", "-X", "importtime", "-m", "memcgctl"]
    argv += ["--state-dir", str(tmp_path / "state"), "daemon", "--root", root, *extra]
    proc = subprocess.Popen(
        argv, cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    lines = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # enforcing: its first rescan took the memcg over
            lines.append(line.rstrip("\n"))
            if "daemon_took_over" in line:
                break
        else:
            raise AssertionError("the daemon stopped before taking over")
        time.sleep(1.0)  # the journal thread has written the record
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    assert proc.returncode == 0
    lines += rest.splitlines()
    headers = [i for i, line in enumerate(lines) if line == IMPORT_TIME_HEADER]
    assert len(headers) == 2, "the command line, then the daemon's own interpreter"
    return {
        line.rsplit("|", 1)[1].strip()
        for line in lines[headers[-1] + 1 :]
        if line.startswith("import time:")
    }


# What the daemon may import from the standard library: these, and what they import
# themselves (the closure differs between Python versions: it is measured, see
# stdlib_closure).  A module outside it fails the test below, so that none comes back
# quietly (issue 22: the daemon imports none it does not use).  Each costs its place:
# pathlib (0.8 MiB: Path),
# json (the journal, the hand-off), re (the kernel log's parser), enum (reasons,
# signals), _ctypes (libc), _thread/_queue (the journal's writer), resource
# (RLIMIT_NOFILE), fcntl (the locks).
DAEMON_STDLIB = ["__future__", "pathlib", "json", "re", "enum", "contextlib"]
DAEMON_STDLIB += ["functools", "collections", "collections.abc", "operator", "types"]
DAEMON_STDLIB += ["math", "errno", "stat", "struct", "time", "select", "signal", "gc"]
DAEMON_STDLIB += ["resource", "fcntl", "_thread", "_queue", "_ctypes", "os", "sys"]
DAEMON_STDLIB += ["importlib"]  # (state.daemonlock: the interpreter's own _sha256)


def import_lines(stderr: str) -> list[str]:
    lines = [line for line in stderr.splitlines() if line.startswith("import time:")]
    return [line.rsplit("|", 1)[1].strip() for line in lines if line != IMPORT_TIME_HEADER]


def stdlib_closure(names: list[str]) -> set[str]:
    """What a bare ``python3 -S`` reports under ``-X importtime`` when it imports
    ``names``: them, what they import, and the optional imports they try (``nt``, …)."""
    code = "\n".join(f"import {name}" for name in names)  # (import_module is not timed)
    p = subprocess.run(
        [sys.executable, "-S", "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(import_lines(p.stderr))


def daemon_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    path = [str(REPO), *(p for p in sys.path if p and os.path.isdir(p))]
    return {**env, "PYTHONPATH": os.pathsep.join(path), **extra}


@pytest.mark.parametrize("guardian", ["none", "process"])
def test_the_running_daemon_imports_only_what_it_uses(
    cgroups: TestCgroups, tmp_path: Path, guardian: str
) -> None:
    cg = cgroups.make("managed", limit=64 << 20)
    os.setxattr(cgroups.path(cg), "trusted.memcgctl.oom_delay_ms", b"1000")
    argv = [f"--guardian={guardian}", "--rescan", "200ms"]
    mods = imported_by_daemon(tmp_path, cgroups.parent, *argv, env=daemon_env())
    assert "memcgctl.daemon.loop" in mods and "memcgctl.state.journal" in mods  # it ran
    assert "memcgctl.commands.daemonrun" in mods  # in its own interpreter
    assert not mods & (NEVER | UNLESS_USED), sorted(mods & (NEVER | UNLESS_USED))
    stdlib = {m for m in mods if m.split(".")[0] != "memcgctl"}
    allowed = stdlib_closure(DAEMON_STDLIB)
    assert stdlib <= allowed, f"new in the daemon: {sorted(stdlib - allowed)}"


def test_the_allowed_stdlib_leaves_out_what_was_cut() -> None:
    """The daemon's allowed standard library (its closure, measured) holds none of
    the modules cut from it, and the closure is measured, not empty."""
    allowed = stdlib_closure(DAEMON_STDLIB)
    assert {"pathlib", "json", "_ctypes"} <= allowed
    assert not allowed & (NEVER | UNLESS_USED), sorted(allowed & (NEVER | UNLESS_USED))


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
    assert "_socket" in mods  # the C module alone: not socket.py and its enums
    unused = NEVER | {"subprocess", "socket"}
    assert not mods & unused, sorted(mods & unused)
    stdlib = {m for m in mods if m.split(".")[0] != "memcgctl"}
    allowed = stdlib_closure([*DAEMON_STDLIB, "_socket"])
    assert stdlib <= allowed, f"new in the daemon: {sorted(stdlib - allowed)}"


@pytest.mark.parametrize("delay_ms", ["0", "300"])
def test_the_oom_path_imports_nothing(cgroups: TestCgroups, tmp_path: Path, delay_ms: str) -> None:
    """Everything the kill needs is imported before the daemon takes a memcg over: an
    import at the event would cost the victim's race milliseconds (more under TCG).
    ``-X importtime`` prints a line per import as it happens; none may come between
    ``daemon_took_over`` and the end of the episode (the kill, its records, the
    journal writer's append)."""
    top = cgroups.make("jobs", limit=96 << 20)
    low, high = cgroups.make("jobs/low", limit=None), cgroups.make("jobs/high", limit=None)
    os.setxattr(cgroups.path(low), "trusted.memcgctl.badness", b"100")
    os.setxattr(cgroups.path(high), "trusted.memcgctl.badness", b"900")
    os.setxattr(cgroups.path(top), "trusted.memcgctl.oom_delay_ms", delay_ms.encode())
    big = cgroups.hog(high, mib=56)  # the kernel's choice: not the policy's
    argv = [sys.executable, "-S", "-X", "importtime", "-m", "memcgctl"]
    argv += ["--state-dir", str(tmp_path / "state"), "daemon", "--root", cgroups.parent]
    argv += ["--guardian=none", "--rescan", "200ms"]
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=daemon_env(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    after: list[str] = []
    # a daemon that never logs the episode's end is stopped: the test fails, not hangs
    stop = threading.Timer(120, proc.send_signal, (signal.SIGTERM,))
    stop.start()
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "daemon_took_over" in line:
                break
        else:
            raise AssertionError("the daemon stopped before taking over")
        grower = cgroups.spawn(low, [sys.executable, str(HELPERS / "grow.py"), "4096", "512"])
        assert grower.wait(timeout=30) == -signal.SIGKILL
        for line in proc.stderr:
            after.append(line.rstrip("\n"))
            if "oom_resolved" in line:
                break
        time.sleep(1.0)  # the journal thread has appended the episode's records
    finally:
        stop.cancel()
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    assert any("daemon_kill" in line and f"pid={grower.pid}" in line for line in after), after
    assert big.poll() is None
    stopping = [i for i, line in enumerate(rest.splitlines()) if "daemon_released" in line]
    episode = after + rest.splitlines()[: stopping[0]]  # (its stop may import: not the path)
    assert not [line for line in episode if line.startswith("import time:")], episode


def modules_of_light_process(argv: list[str], out: Path, wait: float) -> set[str]:
    """Run a :func:`guardian.light_argv` command line as it is, but write the modules it
    holds at exit (SIGINT after ``wait`` s) to ``out``: only ``atexit`` and the builtin
    ``_signal`` are added to what the process itself loads."""
    i = argv.index("-c") + 1
    dump = f"lambda: open({str(out)!r}, 'w').write(chr(10).join(sorted(sys.modules)))"
    prelude = (  # SIGINT: KeyboardInterrupt, also when the tests run in a background job
        "import _signal;_signal.signal(2, _signal.default_int_handler);"
        f"import atexit,sys;atexit.register({dump});"
    )
    p = subprocess.Popen([*argv[:i], prelude + argv[i], *argv[i + 1 :]], env=daemon_env())
    time.sleep(wait)
    assert p.poll() is None
    p.send_signal(signal.SIGINT)
    p.wait(timeout=10)
    return set(out.read_text().split())


# a bare `python3 -S` (its own start-up), plus what the guardian's os.stat and poll need
GUARDIAN_MAY_LOAD = {"os", "os.path", "posixpath", "genericpath", "stat", "_stat", "select"}
GUARDIAN_MAY_LOAD |= {"_collections_abc", "time", "__future__", "atexit"}
GUARDIAN_MAY_LOAD |= {"memcgctl", "memcgctl.daemon", "memcgctl.daemon.guardian"}


def test_an_idle_guardian_process_imports_only_os_select_and_time(tmp_path: Path) -> None:
    """The guardian process as the daemon starts it (``python3 -S``, the daemon's
    sys.path), watching a live "daemon": until it must act it holds what a bare
    ``python3 -S`` holds, plus os, select and time (and its own module).  No site, so
    none of a host's .pth hooks either."""
    daemon = subprocess.Popen(["sleep", "60"])
    try:
        proc_fs = ProcFs(Path("/proc"))
        instance = f"{proc_fs.boot_id()}/{daemon.pid}/{proc_fs.start_time(daemon.pid)}"
        guardian.Heartbeat(str(tmp_path), daemon.pid)  # starting: not judged by its beat
        argv = guardian.argv(sys.executable, "/proc", "", str(tmp_path), "/", instance)
        assert "-S" in argv[: argv.index("-c")] and "-m" not in argv
        bare = [sys.executable, "-S", "-c", "import time; time.sleep(60)"]
        baseline = modules_of_light_process(bare, tmp_path / "bare", 0.5)
        mods = modules_of_light_process(argv, tmp_path / "modules", 1.5)  # several looks
    finally:
        daemon.kill()
        daemon.wait()
    assert "memcgctl.daemon.guardian" in mods  # it ran
    assert mods - baseline <= GUARDIAN_MAY_LOAD, sorted(mods - baseline - GUARDIAN_MAY_LOAD)
    assert "site" not in mods


# a process that found memcgctl as an editable install does: through an import hook
# (the install's .pth adds one), the checkout itself not on sys.path
EDITABLE = f"""
import importlib.util, json, sys
pkg = {str(REPO / "memcgctl")!r}
sys.path[:] = [p for p in sys.path if p not in ("", {str(REPO)!r})]
class Finder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "memcgctl":
            init = pkg + "/__init__.py"
            return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[pkg])
sys.meta_path.append(Finder)
from memcgctl.daemon import guardian
print(json.dumps(guardian.light_argv(sys.executable, "memcgctl.daemon.guardian", "main", [])))
"""


def test_the_guardian_finds_memcgctl_where_the_daemon_did(tmp_path: Path) -> None:
    """-S skips the .pth of an editable install: the directory that holds the daemon's
    memcgctl goes on the guardian's path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    made = subprocess.run(
        [sys.executable, "-S", "-c", EDITABLE],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    argv = json.loads(made.stdout)
    i = argv.index("-c") + 1
    argv[i] = argv[i].replace("from memcgctl.daemon.guardian import main;", "import memcgctl;")
    argv[i] = argv[i].replace("sys.exit(main(sys.argv[1:]))", "print(memcgctl.__file__)")
    r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(REPO / "memcgctl" / "__init__.py")


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
