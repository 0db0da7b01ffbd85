"""Issue 12 (items 1-4, 9): hostile users and faults, reproduced for real on this machine.

The attacker is the ``nobody`` user where the attack needs one (``setpriv``, or a fork
that drops to uid 65534), with real flock holders, real symlinks, real process names
(``prctl(PR_SET_NAME)``), real corrupt files and a real terminal (a pty).  Every test
asserts the safe outcome: the exit code, one stderr line, files untouched, no traceback.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from memcgctl.cli import cli
from memcgctl.render.safetext import log_value, printable
from memcgctl.state.journal import Journal
from memcgctl.state.statedir import LOCK_TIMEOUT_S, loads_bounded
from memcgctl.vocab.records import UserKill
from tests.fakehost import FakeHost
from tests.promtext import parse_exposition
from tests.realkernel import TestCgroups, import_everything

ROOT = Path(__file__).resolve().parent.parent
NOBODY = 65534
SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SYSTEM_PYTHON = "/usr/bin/python3"  # readable by nobody (the project's may live in /root)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as nobody")
needs_setpriv = pytest.mark.skipif(
    shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK),
    reason="needs setpriv and /usr/bin/python3 to run an attacker as nobody",
)

ESCAPES = "\x1b]0;PWNED\x07\x1b[2J"  # 14 bytes: fits comm's 15


def run(host: FakeHost, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=host.cli_env())


def assert_clean(r: Result) -> None:
    """No traceback: either success or one of our errors (SystemExit)."""
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    return lines[0]


def populate(h: FakeHost) -> FakeHost:
    h.cgroup("/batch", badness=100)
    h.process(200, "/batch", comm="worker", rss_anon_kb=5000)
    h.process(201, "/batch", comm="helper", rss_anon_kb=100)
    return h


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    return populate(fake_v1)


@pytest.fixture
def open_host() -> Iterator[FakeHost]:
    """A fixture tree under a directory nobody can traverse (pytest's tmp is 0700)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="memcgctl-hostile-"))
    os.chmod(base, 0o755)
    try:
        yield populate(FakeHost(base, version=1))
    finally:
        shutil.rmtree(base)


def start_nobody(*argv: str) -> subprocess.Popen[bytes]:
    """An attacker process as nobody; returns once it printed ``ready``."""
    p = subprocess.Popen([*SETPRIV, *argv], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    return p


def stop(p: subprocess.Popen[bytes]) -> None:
    p.kill()
    p.wait(timeout=10)
    if p.stdout is not None:
        p.stdout.close()


# -- item 1: a state directory nobody else can stall ------------------------------------


@needs_root
@pytest.mark.parametrize(
    ("owner", "mode"), [(NOBODY, 0o700), (0, 0o777), (0, 0o775)], ids=["nobody's", "0777", "0775"]
)
def test_state_dir_others_can_write_is_refused(host: FakeHost, owner: int, mode: int) -> None:
    host.state.mkdir(mode=0o700)
    os.chown(host.state, owner, owner)
    os.chmod(host.state, mode)
    for argv in (["set-badness", "--pid", "200", "5"], ["ps", "--json"]):
        r = run(host, *argv)
        assert_clean(r)
        assert r.exit_code == 4, r.output
        assert "refusing the state directory" in one_line(r.stderr)
    assert os.listdir(host.state) == []  # nothing written into it


@needs_root
@needs_setpriv
def test_old_world_readable_lock_held_by_nobody_does_not_stall(open_host: FakeHost) -> None:
    """The issue's attack: ``setpriv --reuid=nobody flock -x STATE/…lock`` on a 0644 lock
    file (as older versions made them) in a 0755 state directory."""
    host = open_host
    host.state.mkdir(mode=0o755)
    os.chmod(host.state, 0o755)
    lock = host.state / "badness.lock"
    lock.touch()
    os.chmod(lock, 0o644)
    holder = start_nobody("flock", "-x", str(lock), "-c", "echo ready; exec sleep 60")
    try:
        t0 = time.monotonic()
        r = run(host, "set-badness", "--pid", "200", "5")
        took = time.monotonic() - t0
        assert_clean(r)
        assert r.exit_code == 0, r.output
        # waiting for nobody's lock would take the whole lock timeout
        assert took < LOCK_TIMEOUT_S - 1, f"waited {took:.1f}s on a lock nobody holds"
        assert stat.S_IMODE(os.stat(lock).st_mode) == 0o600
        registry = host.state / "badness.json"
        assert stat.S_IMODE(os.stat(registry).st_mode) == 0o600
        # and the new lock file cannot even be opened by nobody
        again = subprocess.run(
            [*SETPRIV, "flock", "-n", "-x", str(lock), "true"], capture_output=True, timeout=10
        )
        assert again.returncode != 0 and b"Permission denied" in again.stderr
    finally:
        stop(holder)


_HOLD = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('ready', flush=True)\n"
    "time.sleep(120)\n"
)


def hold_lock(path: Path) -> subprocess.Popen[bytes]:
    """Another process of ours (a stuck memcgctl) holding an flock on ``path``."""
    p = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    return p


def test_a_held_lock_is_a_bounded_wait_and_a_clear_error(host: FakeHost) -> None:
    host.state.mkdir(mode=0o700)
    holder = hold_lock(host.state / "badness.lock")
    try:
        t0 = time.monotonic()
        r = run(host, "set-badness", "--pid", "200", "5")
        took = time.monotonic() - t0
    finally:
        stop(holder)
    assert_clean(r)
    assert r.exit_code == 1
    line = one_line(r.stderr)
    assert f"held by pid {holder.pid}" in line and "badness.lock" in line
    assert LOCK_TIMEOUT_S - 1 < took < 2 * LOCK_TIMEOUT_S  # bounded: never forever
    assert not (host.state / "badness.json").exists()


@pytest.mark.kernel
def test_kill_all_kills_first_and_journals_with_a_bounded_wait(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    job = cgroups.make("job")
    victim = cgroups.sleeper(job)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    holder = hold_lock(state / "journal.lock")
    try:
        t0 = time.monotonic()
        r = CliRunner().invoke(
            cli,
            ["kill-all", job, "--timeout", "10"],
            env={"MEMCGCTL_STATE_DIR": str(state), "MEMCGCTL_CGROUP_ROOT": str(cgroups.mount)},
        )
        took = time.monotonic() - t0
    finally:
        stop(holder)
    assert_clean(r)
    assert r.exit_code == 0, r.output
    assert victim.wait(timeout=5) is not None  # killed although the journal was stuck
    assert cgroups.subtree_pids(job) == []
    line = one_line(r.stderr)
    assert "kills not recorded" in line and f"held by pid {holder.pid}" in line
    assert took < LOCK_TIMEOUT_S + 4, took  # one bounded wait for the journal, not forever


# -- item 2: terminal output ------------------------------------------------------------


def test_printable_and_log_value() -> None:
    assert printable("[/evil]") == "[/evil]"
    assert printable(ESCAPES) == "?]0;PWNED??[2J"
    assert printable("a\u202ebc\x85\x7f") == "a?bc??"
    forged = f"cgroup={log_value('x delay_ms=0 mode=oom')} delay_ms={log_value(500)}"
    assert forged == 'cgroup="x delay_ms=0 mode=oom" delay_ms=500'
    assert log_value('a"b\\c\nd\x1b') == '"a\\"b\\\\c\\nd\\x1b"'
    assert log_value("") == '""' and log_value("/batch/job1") == "/batch/job1"


def test_plain_output_replaces_control_characters(host: FakeHost) -> None:
    host.process(300, "/batch", comm=ESCAPES, rss_anon_kb=1)
    host.cgroup("/[red]x")
    for argv in (
        ["ps", "--plain"],
        ["tree", "--plain"],
        ["predict-victim", "--explain", "--top", "5", "--plain"],
    ):
        r = run(host, *argv)
        assert_clean(r)
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.output and "\x07" not in r.output
    assert "?]0;PWNED??[2J" in run(host, "ps", "--plain").stdout
    assert "[red]x" in run(host, "tree", "--plain").stdout


def run_on_tty(argv: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run memcgctl with stdout and stderr on a real pseudo-terminal (rich output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 250, 0, 0))
    full = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "250", "TERM": "xterm", **env}
    full.pop("NO_COLOR", None)
    p = subprocess.Popen(
        [sys.executable, "-m", "memcgctl", *argv],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=full,
        close_fds=True,
    )
    os.close(slave)
    out = b""
    try:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        code = p.wait(timeout=60)
    finally:
        os.close(master)
    return code, out


def test_rich_terminal_output_shows_markup_literally(host: FakeHost) -> None:
    host.process(300, "/batch", comm="[/evil]", rss_anon_kb=1)
    host.process(301, "/batch", comm=ESCAPES, rss_anon_kb=2)
    host.cgroup("/[red]x")
    env = host.cli_env()
    for argv in (["ps"], ["predict-victim", "/batch", "--top", "5", "--explain"], ["tree"]):
        code, out = run_on_tty(argv, env)
        assert code == 0, out
        assert b"Traceback" not in out and b"MarkupError" not in out
        assert b"\x1b]0;PWNED" not in out and b"\x07" not in out and b"\x1b[2J" not in out
        if argv[0] != "tree":
            assert b"[/evil]" in out and b"?]0;PWNED??[2J" in out
        else:
            assert b"[red]x" in out


_SET_COMM = (
    "import ctypes, sys, time\n"
    "ctypes.CDLL(None).prctl(15, ctypes.c_char_p(bytes.fromhex(sys.argv[1])), 0, 0, 0)\n"
    "print('ready', flush=True)\n"
    "time.sleep(3600)\n"
)


@pytest.mark.kernel
@needs_setpriv
def test_real_processes_named_by_nobody_on_a_real_terminal(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    """prctl(PR_SET_NAME) by a nobody process: ps / predict-victim --top / --explain on a
    terminal and piped, and a cgroup named like rich markup in tree."""
    job = cgroups.make("job")
    cgroups.make("job/[red]x")
    for name in ("[/evil]", ESCAPES):
        cgroups.spawn(job, [*SETPRIV, SYSTEM_PYTHON, "-c", _SET_COMM, name.encode().hex()])
    env = {
        "MEMCGCTL_STATE_DIR": str(tmp_path / "state"),
        "MEMCGCTL_CGROUP_ROOT": str(cgroups.mount),
    }
    for argv in (
        ["ps", job],
        ["predict-victim", job, "--top", "3"],
        ["predict-victim", job, "--explain"],
        ["tree", job],
    ):
        code, out = run_on_tty(argv, env)
        assert code == 0, out
        assert b"Traceback" not in out and b"MarkupError" not in out
        assert b"\x1b]0;PWNED" not in out and b"\x07" not in out
        assert (b"[red]x" if argv[0] == "tree" else b"[/evil]") in out
    r = CliRunner().invoke(cli, ["ps", job, "--plain"], env=env)
    assert r.exit_code == 0 and "[/evil]" in r.stdout and "?]0;PWNED??[2J" in r.stdout


# -- item 3: no symlink following, unpredictable temporary names, 0600 --------------------


@pytest.fixture
def victim(tmp_path: Path) -> Iterator[Path]:
    """A file another user wants us to overwrite (root's, outside the state dir)."""
    v = tmp_path / "victim"
    v.write_text("precious\n")
    yield v
    assert v.read_text() == "precious\n", "the victim file was written through a link"


def test_journal_symlink_is_not_followed(host: FakeHost, victim: Path) -> None:
    host.state.mkdir(mode=0o700)
    os.symlink(victim, host.state / "journal.jsonl")
    rec: UserKill = {
        "time": "2024-01-01T00:00:00Z",
        "kind": "user_kill",
        "cgroup": "/batch",
        "pid": 9,
    }
    warnings: list[str] = []
    Journal(host.state, warn=warnings.append).append([rec])
    st = os.lstat(host.state / "journal.jsonl")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    aside = [p for p in host.state.iterdir() if p.name.startswith("journal.jsonl.corrupt-")]
    assert len(aside) == 1 and aside[0].is_symlink()
    assert [r.get("pid") for r in Journal(host.state).read()] == [9]


def test_predictable_temporary_names_are_not_used(host: FakeHost, victim: Path) -> None:
    """Links planted for upcoming pids (``.badness.json.<pid>.tmp``) are never opened."""
    host.state.mkdir(mode=0o700)
    me = os.getpid()
    for pid in range(me - 50, me + 200):
        for name in (f".badness.json.{pid}.tmp", f".kmsg.cursor.{pid}.tmp"):
            os.symlink(victim, host.state / name)
    os.symlink(victim, host.state / "badness.json")
    r = run(host, "set-badness", "--pid", "200", "5")
    assert_clean(r)
    assert r.exit_code == 0, r.output
    assert "badness.json: corrupt (a symbolic link" in one_line(r.stderr)
    reg = host.state / "badness.json"
    assert not reg.is_symlink() and stat.S_IMODE(reg.stat().st_mode) == 0o600


def test_files_are_0600_under_umask_000(host: FakeHost) -> None:
    (host.base / "kmsg").write_text(
        "6,1,1000,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
        "mems_allowed=0,oom_memcg=/batch,task_memcg=/batch,task=worker,pid=201,uid=0\n"
        "3,2,2000,-;Memory cgroup out of memory: Killed process 201 (worker) total-vm:1kB, "
        "anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0\n"
    )
    old = os.umask(0)
    try:
        assert run(host, "set-badness", "--pid", "200", "5").exit_code == 0
        assert run(host, "counters", "--json").exit_code == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(host.state.stat().st_mode) == 0o700
    names = sorted(p.name for p in host.state.iterdir())
    assert {"badness.json", "journal.jsonl", "kmsg.cursor"} <= set(names)
    for p in host.state.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p


def _kill_host(host: FakeHost) -> None:
    host.cgroup("/batch", oom_kill=1)
    (host.base / "kmsg").write_text(
        "6,10,1000,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
        "mems_allowed=0,oom_memcg=/batch,task_memcg=/batch,task=worker,pid=201,uid=0\n"
        "3,11,2000,-;Memory cgroup out of memory: Killed process 201 (worker) total-vm:1kB, "
        "anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0\n"
    )


@pytest.mark.parametrize("seq", [10**9, 11], ids=["past the ring", "no journaled kill"])
def test_a_forged_cursor_does_not_hide_kernel_kills(host: FakeHost, seq: int) -> None:
    _kill_host(host)
    host.state.mkdir(mode=0o700)
    (host.state / "kmsg.cursor").write_text(json.dumps({"boot_id": "fake-boot-id", "seq": seq}))
    r = run(host, "counters", "/batch", "--json")
    assert_clean(r)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["cgroups"][0]["by_cause"]["memcg"] == 1
    assert "kmsg.cursor" in one_line(r.stderr)
    # the forged cursor is set aside; the next run trusts the new one silently
    r = run(host, "counters", "/batch", "--json")
    assert r.stderr == "" and json.loads(r.stdout)["cgroups"][0]["by_cause"]["memcg"] == 1


# -- item 4: corrupt state ------------------------------------------------------------------

CORRUPT_REGISTRIES = {
    "processes is 5": b'{"processes":5}',
    "badness 1e400": b'{"boot_id":"fake-boot-id","processes":[{"pid":200,"start_time":1200,"badness":1e400}]}',
    "100000 nested": b"[" * 100_000,
    "garbage": b"\x00\xff not json \x1b[2J",
    "truncated": b'{"version":1,"boot_id":"fake-boot-id","processes":[{"pid":200,"st',
    "a list": b"[1, 2, 3]",
    "a FIFO": b"",
}


@pytest.mark.parametrize("kind", list(CORRUPT_REGISTRIES))
@pytest.mark.parametrize(
    "argv",
    [
        ["ps", "--json"],
        ["predict-victim", "--json"],
        ["get-badness", "--pid", "200"],
        ["set-badness", "--pid", "201", "7"],
    ],
    ids=lambda a: a[0],
)
def test_corrupt_registry_is_reported_once_and_set_aside(
    host: FakeHost, kind: str, argv: list[str]
) -> None:
    host.state.mkdir(mode=0o700)
    reg = host.state / "badness.json"
    data = CORRUPT_REGISTRIES[kind]
    if kind == "a FIFO":
        os.mkfifo(reg, 0o600)
    else:
        reg.write_bytes(data)
    r = run(host, *argv)
    assert_clean(r)
    assert r.exit_code == 0, r.output
    line = one_line(r.stderr)
    assert "badness.json" in line and ("corrupt" in line or "malformed" in line)
    aside = [p for p in host.state.iterdir() if p.name.startswith("badness.json.corrupt-")]
    assert len(aside) == 1
    if kind != "a FIFO":
        assert aside[0].read_bytes() == data  # nothing dropped: all of it saved
    if argv[0] == "set-badness":
        doc = json.loads(reg.read_bytes())
        assert doc["processes"] == [{"pid": 201, "start_time": 1201, "badness": 7}]
    # reported once: the next command is quiet
    assert run(host, *argv).stderr == ""


def test_malformed_entries_are_skipped_valid_ones_kept(host: FakeHost) -> None:
    host.state.mkdir(mode=0o700)
    good = {"pid": 200, "start_time": 1200, "badness": 42}
    doc = {"boot_id": "fake-boot-id", "processes": [good, {"pid": "x"}, 5, {**good, "pid": True}]}
    (host.state / "badness.json").write_text(json.dumps(doc))
    r = run(host, "get-badness", "--pid", "200", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["processes"][0]["badness"] == 42
    assert "3 malformed entries skipped, 1 kept" in one_line(r.stderr)
    aside = [p for p in host.state.iterdir() if p.name.startswith("badness.json.corrupt-")]
    assert len(aside) == 1 and json.loads(aside[0].read_text()) == doc
    r = run(host, "set-badness", "--pid", "201", "9")
    assert r.exit_code == 0 and r.stderr == ""
    saved = json.loads((host.state / "badness.json").read_text())["processes"]
    assert {(e["pid"], e["badness"]) for e in saved} == {(200, 42), (201, 9)}


def test_corrupt_journal_lines_skipped_good_ones_kept(host: FakeHost) -> None:
    host.state.mkdir(mode=0o700)
    good = {"time": "2024-01-01T00:00:00Z", "kind": "user_kill", "cgroup": "/batch", "pid": 7}
    lines = [
        json.dumps(good),
        '{"time":"2024-01-01T00:00:01Z","kind":null,"cgroup":"/batch"}',
        '{"time":"2024-01-01T00:00:02Z","kind":"oom_kill","cgroup":5,"pid":"x"}',
        '{"time":"2024-01-01T00:00:03Z","kind":"oom_kill","anon_rss_kb":1e400}',
        "[" * 100_000,
        "\x00garbage",
        json.dumps({**good, "pid": 8}),
        '{"time":"2024-01-01T00:00:04Z","kind":"user_ki',  # torn by a crash
    ]
    original = ("\n".join(lines) + "\n").encode()
    (host.base / "kmsg").write_text("6,1,1000,-;nothing about OOM\n")
    (host.state / "journal.jsonl").write_bytes(original)
    r = run(host, "events", "--json")
    assert_clean(r)
    assert r.exit_code == 0, r.output
    assert [e["pid"] for e in json.loads(r.stdout)["events"]] == [7, 8]
    line = one_line(r.stderr)
    assert "journal.jsonl: skipped 6 corrupt records, kept 2" in line
    aside = [p for p in host.state.iterdir() if p.name.startswith("journal.jsonl.corrupt-")]
    assert len(aside) == 1 and aside[0].read_bytes() == original
    assert [
        json.loads(x)["pid"] for x in (host.state / "journal.jsonl").read_text().splitlines()
    ] == [7, 8]
    for argv in (["events"], ["counters", "--json"]):
        r = run(host, *argv)
        assert r.exit_code == 0 and r.stderr == "", r.output


@pytest.mark.parametrize(
    "content", [b"[" * 100_000, b'{"boot_id":"fake-boot-id","seq":1e400}', b"\xff"]
)
def test_corrupt_cursor_is_set_aside(host: FakeHost, content: bytes) -> None:
    _kill_host(host)
    host.state.mkdir(mode=0o700)
    (host.state / "kmsg.cursor").write_bytes(content)
    r = run(host, "counters", "--json")
    assert_clean(r)
    assert r.exit_code == 0
    assert "kmsg.cursor" in one_line(r.stderr)
    assert any(p.name.startswith("kmsg.cursor.corrupt-") for p in host.state.iterdir())


def test_loads_bounded_never_recurses() -> None:
    from memcgctl.state.statedir import Corrupt

    for data in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000, b"1" * 10_000):
        with pytest.raises(Corrupt):
            loads_bounded(data)
    assert loads_bounded(b'{"a": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}') == {"a": "[" * 40}


# -- item 9: strict parsing, bounded reads, all-or-nothing run ----------------------------


@pytest.mark.parametrize("source", ["/dev/zero", "/dev/null", "fifo"])
def test_kmsg_source_that_is_no_kernel_log_is_refused(host: FakeHost, source: str) -> None:
    if source == "fifo":
        source = str(host.base / "fifo")
        os.mkfifo(source)
    t0 = time.monotonic()
    r = run(host, "--kmsg", source, "events")
    assert_clean(r)
    assert r.exit_code == 2 and time.monotonic() - t0 < 5
    assert "not a kernel log" in one_line(r.stderr)


@pytest.mark.kernel
def test_term_grace_then_kill_gets_real_time_and_is_journaled(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    """``--signal TERM --grace 2 --timeout 1``: the grace outlasts the timeout, and the
    SIGKILL phase still has its second (it used to get 0 s and report survivors)."""
    job = cgroups.make("job")
    cgroups.spawn(
        job, ["/bin/sh", "-c", "trap '' TERM; sleep 3600 & sleep 3600 & echo ready; wait"]
    )
    assert len(cgroups.pids(job)) == 3
    state = tmp_path / "state"
    r = CliRunner().invoke(
        cli,
        ["kill-all", job, "--signal", "TERM", "--grace", "2", "--timeout", "1", "--json"],
        env={"MEMCGCTL_STATE_DIR": str(state), "MEMCGCTL_CGROUP_ROOT": str(cgroups.mount)},
    )
    assert_clean(r)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["empty"] and [p["signal"] for p in doc["phases"]] == ["SIGTERM", "SIGKILL"]
    assert cgroups.subtree_pids(job) == []
    recs = [x for x in Journal(state).read() if x["kind"] == "manual_kill"]
    assert len(recs) == 3 and {x.get("signal") for x in recs} == {"SIGKILL"}


def _import_everything() -> None:
    """Every memcgctl module imported while still root (:func:`import_everything`)."""
    import_everything()


def _as_nobody(fn: object) -> tuple[int, str, str]:
    """Run a CliRunner invocation in a fork that dropped to nobody."""
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            _import_everything()
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            r = fn()  # type: ignore[operator]
            os.write(wfd, json.dumps([r.exit_code, r.stdout, r.stderr]).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        code, out, err = json.loads(f.read() or '[-1, "", "child died"]')
    os.waitpid(child, 0)
    return code, out, err


@needs_root
def test_run_as_unprivileged_user_changes_nothing_when_the_state_dir_fails(
    tmp_path: Path,
) -> None:
    """nobody owns a delegated cgroup (so the xattr and the join would succeed) but not
    the state directory: ``run`` refuses before changing anything."""
    os.chmod(tmp_path, 0o755)
    host = FakeHost(tmp_path / "h", version=1)
    for p in [tmp_path / "h", *(tmp_path / "h").rglob("*")]:
        os.chmod(p, 0o755 if p.is_dir() else 0o644)
    deleg = host.cgroup("/deleg")
    os.chown(deleg, NOBODY, NOBODY)
    os.chown(deleg / "cgroup.procs", NOBODY, NOBODY)
    host.state.mkdir(mode=0o755)  # root's: nobody cannot write the registry
    before = {n: os.getxattr(deleg, n) for n in os.listxattr(deleg)}

    def invoke() -> Result:
        return CliRunner().invoke(
            cli,
            ["run", "--cgroup", "/deleg/job", "--delay", "1s", "--badness", "5", "--", "true"],
            env=host.cli_env(),
        )

    code, out, err = _as_nobody(invoke)
    assert code == 4, (out, err)
    assert "permission denied" in one_line(err)
    assert {n: os.getxattr(deleg, n) for n in os.listxattr(deleg)} == before
    assert not (deleg / "job").exists()
    assert (deleg / "cgroup.procs").read_text() == ""
    assert os.listdir(host.state) == []


# -- pod labels a delegated user writes --------------------------------------------------

_LABEL_AS_NOBODY = (
    "import os, sys\n"
    "top = sys.argv[1]\n"
    "for name, label in zip(sys.argv[2::2], sys.argv[3::2]):\n"
    "    d = os.path.join(top, name)\n"
    "    os.mkdir(d)\n"
    "    os.setxattr(d, 'user.memcgctl.badness', b'5')\n"
    "    os.setxattr(d, 'user.memcgctl.pod', bytes.fromhex(label))\n"
)


@pytest.mark.kernel
@needs_setpriv
def test_pod_labels_written_by_nobody_in_a_delegated_subtree(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    """nobody owns a delegated subtree and labels its cgroups (user.memcgctl.pod) beside
    a badness that counts there: a Kubernetes-shaped label is shown, markup and escape
    sequences are no label at all, on a terminal and in the JSON."""
    deleg = cgroups.make("deleg")
    d = cgroups.path(deleg)
    for f in [d, *(d / n for n in ("cgroup.procs", "tasks", "cgroup.subtree_control"))]:
        if f.exists():
            os.chown(f, NOBODY, NOBODY)
    labels = {"good": "team/web-1", "markup": "[red]x/y", "escape": f"ns/{ESCAPES}"}
    argv = [arg for name, label in labels.items() for arg in (name, label.encode().hex())]
    r = subprocess.run(
        [*SETPRIV, SYSTEM_PYTHON, "-c", _LABEL_AS_NOBODY, str(d), *argv],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    for name in labels:
        assert os.stat(d / name).st_uid == NOBODY  # nobody's own cgroups, nobody's labels
        cgroups.hog(f"{deleg}/{name}", mib=1)
    env = {
        "MEMCGCTL_STATE_DIR": str(tmp_path / "state"),
        "MEMCGCTL_CGROUP_ROOT": str(cgroups.mount),
    }
    code, out = run_on_tty(["predict-victim", deleg, "--explain"], env)
    assert code == 0, out
    assert b"Traceback" not in out and b"MarkupError" not in out
    assert b"(pod team/web-1)" in out
    assert b"\x1b]0;PWNED" not in out and b"PWNED" not in out and b"[red]x/y" not in out
    res = CliRunner().invoke(cli, ["predict-victim", deleg, "--json"], env=env)
    assert res.exit_code == 0, res.output
    (level,) = json.loads(res.stdout)["walk"][:1]
    pods = {c["cgroup"]: c["pod"] for c in level["candidates"] if c["kind"] == "cgroup"}
    assert pods == {
        f"{deleg}/good": "team/web-1",
        f"{deleg}/markup": None,
        f"{deleg}/escape": None,
    }


# -- issue 21 item 8: a cgroup name that is not UTF-8 ------------------------------------


def delegate(cgroups: TestCgroups, rel: str) -> Path:
    """``rel`` made a delegated subtree of nobody (v1: the directory and its task files)."""
    d = cgroups.path(cgroups.make(rel))
    for f in [d, *(d / n for n in ("cgroup.procs", "tasks", "cgroup.subtree_control"))]:
        if f.exists():
            os.chown(f, NOBODY, NOBODY)
    return d


@pytest.mark.kernel
@needs_setpriv
def test_counters_prometheus_is_utf8_when_nobody_names_a_cgroup_with_byte_ff(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    """nobody names one cgroup with the byte 0xff and another with the four characters
    ``\\xff``: the exposition is strict UTF-8, a strict parser (and prometheus_client)
    accepts it, and the two cgroups are two series, not one duplicate."""
    d = delegate(cgroups, "deleg")
    names = [b"x\xffy", b"x\\xffy", "café".encode()]
    script = (
        "import os, sys\n"
        "for n in sys.argv[2:]: os.mkdir(os.path.join(os.fsencode(sys.argv[1]), bytes.fromhex(n)))"
    )
    r = subprocess.run(
        [*SETPRIV, SYSTEM_PYTHON, "-c", script, str(d), *(n.hex() for n in names)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    cgs = [os.fsencode(f"{cgroups.parent}/deleg/").__add__(n) for n in names]
    assert all(os.stat(os.fsencode(cgroups.mount) + c).st_uid == NOBODY for c in cgs)
    r2 = subprocess.run(
        [sys.executable, "-m", "memcgctl", "counters", "--format", "prometheus", *cgs],
        capture_output=True,
        env={**os.environ, "MEMCGCTL_STATE_DIR": str(tmp_path / "state")},
        cwd=ROOT,
    )
    assert r2.returncode == 0, r2.stderr
    # (a warning of ours may come from the host's busy kernel log, never a traceback)
    assert all(ln.startswith(b"memcgctl: ") for ln in r2.stderr.splitlines()), r2.stderr
    fams = parse_exposition(r2.stdout.decode("utf-8", errors="strict"))
    labels = {cg for cg, cause in fams["memcgctl_oom_kills"] if cause == "memcg"}
    base = f"{cgroups.parent}/deleg/"
    assert labels == {base + "x\\xffy", base + "x\\x5cxffy", base + "café"}


# -- issue 21 item 11: the state directory's whole path -----------------------------------


def _as_nobody_sh(script: str) -> None:
    r = subprocess.run([*SETPRIV, "/bin/sh", "-ec", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _refused(host: FakeHost, state: Path, fragment: str) -> None:
    """root's commands refuse ``state`` (exit 4, one line naming ``fragment``) and write
    nothing anywhere."""
    for argv in (["set-badness", "--pid", "200", "5"], ["ps", "--json"]):
        r = run(host, "--state-dir", str(state), *argv)
        assert_clean(r)
        assert r.exit_code == 4, r.output
        line = one_line(r.stderr)
        assert line.startswith(f"memcgctl: {state}: refusing the state directory: "), line
        assert fragment in line, line


@needs_root
@needs_setpriv
def test_state_dir_path_that_nobody_can_swap_is_refused(open_host: FakeHost) -> None:
    """nobody owns a directory two levels above root's state directory (``n`` in
    ``n/a/state``).  root refuses it, naming ``n``, and still refuses it after nobody
    swapped ``a`` for a symlink to another directory of root's (whose registry root
    would otherwise use, silently): nothing is read from there or written anywhere."""
    base = open_host.base
    n = base / "n"
    n.mkdir(mode=0o755)
    os.chown(n, NOBODY, NOBODY)
    (n / "a").mkdir(mode=0o755)
    state = n / "a" / "state"
    other = base / "other"  # root's, with a state directory of its own
    (other / "state").mkdir(parents=True, mode=0o700)
    os.chmod(other, 0o755)
    run(open_host, "--state-dir", str(other / "state"), "set-badness", "--pid", "201", "7")
    theirs = sorted(os.listdir(other / "state"))
    assert theirs, "root wrote its registry there"
    _refused(open_host, state, f"{n} belongs to uid {NOBODY} (not you or root)")
    assert not state.exists()
    _as_nobody_sh(f'mv "{n}/a" "{n}/a.old"; ln -s "{other}" "{n}/a"')
    assert (n / "a").is_symlink() and os.lstat(n / "a").st_uid == NOBODY
    _refused(open_host, state, f"{n} belongs to uid {NOBODY} (not you or root)")
    assert sorted(os.listdir(other / "state")) == theirs  # root's other registry untouched
    assert os.listdir(n / "a.old") == []


@needs_root
@needs_setpriv
def test_state_dir_symlinks_and_sticky_directories(open_host: FakeHost) -> None:
    """In a sticky world-writable directory (``/tmp``-like): a directory of root's is a
    fine place for state, a symlink nobody planted there is not followed (named), and
    a symlink of root's is followed only to a path whose every directory is safe."""
    base = open_host.base
    tmp = base / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    (tmp / "root-dir").mkdir(mode=0o755)
    good = tmp / "root-dir" / "state"
    r = run(open_host, "--state-dir", str(good), "set-badness", "--pid", "200", "5")
    assert r.exit_code == 0, r.output
    assert stat.S_IMODE(os.stat(good).st_mode) == 0o700

    nob = tmp / "nobodys"
    _as_nobody_sh(f'mkdir -m 755 "{nob}"; ln -s "{tmp}/root-dir" "{tmp}/link"')
    _refused(open_host, tmp / "link" / "state", f"{tmp}/link is a symlink owned by uid {NOBODY}")
    os.symlink(nob, tmp / "rootlink")  # root's symlink, into nobody's directory
    _refused(open_host, tmp / "rootlink" / "state", f"{nob} belongs to uid {NOBODY}")
    os.symlink("root-dir", tmp / "rel")  # root's, relative, to root's: followed
    r = run(open_host, "--state-dir", str(tmp / "rel" / "state"), "get-badness", "--pid", "200")
    assert r.exit_code == 0 and "200" in r.stdout, r.output
    assert not (nob / "state").exists()

    shared = base / "shared"  # group-writable, not sticky: any member can swap entries
    shared.mkdir()
    os.chmod(shared, 0o775)
    _refused(open_host, shared / "x" / "state", f"{shared} is writable by other users (mode 0775")
    assert not (shared / "x").exists()
