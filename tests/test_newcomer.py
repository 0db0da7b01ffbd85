"""Issue 24: what a newcomer tripped over — tested as that newcomer would meet it
(``nobody`` with root's state directory, the man page's examples run on the kernel,
typos, the root cgroup), each test failing without its fix."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from memcgctl.cli import cli
from memcgctl.commands.examples import EXAMPLES
from tests.fakehost import FakeHost
from tests.realkernel import TestCgroups
from tests.test_hostile import NOBODY, _as_nobody, needs_root

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "man" / "memcgctl.1"
READ_ONLY = (
    ["tree"],
    ["ps"],
    ["get-badness"],
    ["get-delay"],
    ["predict-victim"],
    ["counters"],
    ["events", "--since", "1m"],
)


def invoke(env: dict[str, str], *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def root_state() -> Iterator[Path]:
    """A root-owned state directory in a place nobody can reach (like /run/memcgctl)."""
    base = Path(tempfile.mkdtemp(prefix="memcgctl-i24-"))
    os.chmod(base, 0o755)
    try:
        yield base / "state"
    finally:
        shutil.rmtree(base)


# -- item 1: another user and root's state directory ------------------------------------


@needs_root
@pytest.mark.kernel
@pytest.mark.parametrize("mode", [0o700, 0o755], ids=["0700", "0755"])
def test_read_only_commands_work_for_nobody_with_roots_state_dir(
    cgroups: TestCgroups, root_state: Path, mode: int
) -> None:
    """Root registered a badness for a real process; nobody reads the same tree with
    root's state directory: every read-only command works (no exit 2), and where the
    registry matters one note says it could not be read, instead of a silent 500."""
    job = cgroups.make("job", limit=64 << 20)
    p = cgroups.hog(job, mib=1)
    env = {"MEMCGCTL_STATE_DIR": str(root_state)}
    r = invoke(env, "set-badness", "--pid", str(p.pid), "700")
    assert r.exit_code == 0, r.output
    os.chmod(root_state, mode)
    assert os.stat(root_state / "badness.json").st_mode & 0o777 == 0o600
    as_root = json.loads(invoke(env, "ps", job, "--json").stdout)["processes"]
    assert [(q["badness"], q["badness_source"]) for q in as_root] == [(700, "process")]
    for argv in READ_ONLY:
        code, out, err = _as_nobody(lambda a=argv: invoke(env, *a, job))
        assert code == 0, (argv, out, err)
        assert "Invalid value for '--state-dir'" not in err
        assert "Traceback" not in out + err
    code, out, err = _as_nobody(lambda: invoke(env, "ps", job, "--json"))
    assert code == 0, err
    (row,) = json.loads(out)["processes"]
    assert (row["pid"], row["badness"], row["badness_source"]) == (p.pid, 500, "default")
    (note,) = err.splitlines()  # said once, and what to do about it
    assert "badness.json: not readable by uid 65534" in note and "--state-dir" in note


@needs_root
@pytest.mark.kernel
def test_set_badness_as_nobody_names_the_state_dir_option(
    cgroups: TestCgroups, root_state: Path
) -> None:
    root_state.mkdir(mode=0o700)
    sleeper = cgroups.sleeper(cgroups.make("job", limit=64 << 20))
    env = {"MEMCGCTL_STATE_DIR": str(root_state)}
    code, out, err = _as_nobody(
        lambda: invoke(env, "set-badness", "--pid", str(sleeper.pid), "100")
    )
    assert code == 4, (out, err)
    last = err.splitlines()[-1]
    assert "permission denied" in last and "--state-dir" in last and str(root_state) in last
    assert os.listdir(root_state) == []
    # nobody's own directory works
    own = root_state.parent / "nobody"
    own.mkdir(mode=0o700)
    os.chown(own, NOBODY, NOBODY)
    code, out, err = _as_nobody(
        lambda: invoke(
            {"MEMCGCTL_STATE_DIR": str(own)}, "set-badness", "--pid", str(sleeper.pid), "100"
        )
    )
    # nobody may not rank root's process, but the state directory is no longer the problem
    assert "--state-dir" not in err, err


# -- item 3: "did you mean", examples, the man page's run example ------------------------


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("tre", "tree"), ("predict", "predict-victim"), ("kil-all", "kill-all"), ("evnts", "events")],
)
def test_mistyped_command_suggests(typo: str, meant: str) -> None:
    r = CliRunner().invoke(cli, [typo])
    assert r.exit_code == 2
    (line,) = r.stderr.splitlines()
    assert f"No such command '{typo}'. Did you mean '{meant}'" in line


def test_mistyped_option_suggests() -> None:
    r = CliRunner().invoke(cli, ["predict-victim", "--explian"])
    assert r.exit_code == 2
    assert "--explain" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.parametrize("word", ["xyzzy", "nope"])
def test_nonsense_command_has_no_suggestion(word: str) -> None:
    r = CliRunner().invoke(cli, [word])
    assert r.exit_code == 2
    assert r.stderr == f"memcgctl: No such command '{word}' (see --help)\n"


def _example_argv(line: str) -> list[str]:
    words = shlex.split(line.split("|")[-1].replace("$$", "1"))
    assert words[0] == "memcgctl", line
    return words[1:]


def test_every_command_has_examples_in_help_and_man_page() -> None:
    ctx = click.Context(cli, info_name="memcgctl")
    page = PAGE.read_text()
    names = cli.list_commands(ctx)
    assert set(EXAMPLES) == set(names)
    for name in names:
        r = CliRunner().invoke(cli, [name, "--help"], env={"COLUMNS": "80"})
        assert r.exit_code == 0, r.output
        assert "Examples:" in r.stdout
        for line, _ in EXAMPLES[name]:
            assert line in r.stdout, (name, line)
            assert line.replace("-", "\\-") in page, (name, line)
        assert max(len(t) for t in r.stdout.split("Examples:")[1].splitlines()) <= 80


@pytest.mark.parametrize("line", [line for examples in EXAMPLES.values() for line, _ in examples])
def test_every_example_parses(line: str) -> None:
    """The real option parser accepts every example (an option renamed breaks this)."""
    argv = _example_argv(line)
    ctx = click.Context(cli, info_name="memcgctl")
    command = cli.get_command(ctx, argv[0])
    assert command is not None, line
    command.make_context(argv[0], argv[1:], parent=ctx)


def _man_examples(command: str) -> list[str]:
    """The ``memcgctl COMMAND …`` lines of the man page's EXAMPLES section."""
    text = PAGE.read_text().split(".SH EXAMPLES", 1)[1].split(".SH", 1)[0]
    return [
        ln.replace("\\-", "-") for ln in text.splitlines() if ln.startswith(f"memcgctl {command} ")
    ]


def _walkthrough_runs() -> list[str]:
    """The ``$ memcgctl run …`` lines of the README's walkthrough (how its tiers came
    to exist), without the shell's ``&``."""
    text = (ROOT / "README.md").read_text().split("## A two-minute walkthrough", 1)[1]
    text = text.split("\n## ", 1)[0]
    return [ln[2:].rstrip(" &") for ln in text.splitlines() if ln.startswith("$ memcgctl run ")]


@pytest.mark.kernel
@pytest.mark.parametrize("where", ["man page", "README walkthrough"])
def test_run_examples_work_on_this_kernel(cgroups: TestCgroups, tmp_path: Path, where: str) -> None:
    """Every ``memcgctl run`` line of the man page and of the README's walkthrough, run
    for real (the cgroup named in our test parent, the limit made small, the command
    replaced by one that prints the limit)."""
    lines = _man_examples("run") if where == "man page" else _walkthrough_runs()
    assert lines
    for i, line in enumerate(lines):
        argv = _example_argv(line)
        cmd_at = argv.index("--")
        cg_at = next(i for i, a in enumerate(argv) if a in ("-c", "--cgroup")) + 1
        job = f"{cgroups.parent}/{where[0]}ex{i}"
        argv[cg_at] = job
        argv = [re.sub(r"^\d+G$", "32M", a) for a in argv[:cmd_at]]  # test limits stay small
        limit = cgroups.path(job) / (
            "memory.limit_in_bytes" if cgroups.version == 1 else "memory.max"
        )
        r = subprocess.run(
            [sys.executable, "-m", "memcgctl", *argv, "--", "sh", "-c", f"cat {limit}"],
            cwd=ROOT,
            env={**os.environ, "MEMCGCTL_STATE_DIR": str(tmp_path / "state")},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, (line, r.stderr)
        assert r.stdout.strip() == str(32 << 20)
        cgroups.dirs.append(cgroups.path(job))


# -- item 5: the root cgroup, release, a non-root shadow daemon ---------------------------


def test_set_badness_on_the_root_cgroup_needs_force(fake_v1: FakeHost) -> None:
    env = fake_v1.cli_env()
    r = invoke(env, "set-badness", "/", "10")
    assert r.exit_code == 2
    assert "no effect" in r.stderr and "--force" in r.stderr
    assert "user.memcgctl.badness" not in os.listxattr(fake_v1.cgroot)
    assert "trusted.memcgctl.badness" not in os.listxattr(fake_v1.cgroot)
    r = invoke(env, "set-badness", "/", "10", "--force")
    assert r.exit_code == 0, r.output
    assert "set badness 10" in r.stdout


def test_kill_all_root_refuses_before_walking(fake_v1: FakeHost) -> None:
    """The refusal comes before the subtree is read: a child whose oom_control cannot be
    read (here: a directory in its place) would otherwise fail the command first."""
    fake_v1.cgroup("/batch")
    ctl = fake_v1.cgroot / "batch" / "memory.oom_control"
    ctl.unlink()
    ctl.mkdir()
    extras: list[list[str]] = [[], ["--dry-run"]]
    for extra in extras:
        r = invoke(fake_v1.cli_env(), "kill-all", "/", *extra)
        assert r.exit_code == 2, r.output
        assert "refusing to kill the whole hierarchy" in r.stderr


@pytest.mark.kernel
def test_release_dry_run_says_what_it_would_do(cgroups: TestCgroups, tmp_path: Path) -> None:
    env = {"MEMCGCTL_STATE_DIR": str(tmp_path / "state")}
    job = cgroups.make("job", limit=64 << 20)
    r = invoke(env, "daemon", "--release", "--dry-run", "--root", cgroups.parent)
    assert r.exit_code == 0, r.output
    assert (
        r.stdout
        == f"{cgroups.parent}: would release nothing (no marks or claims of stopped daemons)\n"
    )
    # a stopped daemon's mark and claim (pid 0 never runs)
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    dead = f"{boot}/999999999/1"
    d = cgroups.path(job)
    os.setxattr(
        d,
        "trusted.memcgctl.daemon",
        json.dumps({"instance": dead, "oom_kill_disable": "0"}).encode(),
    )
    os.setxattr(cgroups.path(cgroups.parent), "trusted.memcgctl.daemon_root", dead.encode())
    r = invoke(env, "daemon", "--release", "--dry-run", "--root", cgroups.parent)
    assert r.exit_code == 0, r.output
    assert f"{job}: would restore oom_kill_disable" in r.stdout
    assert f"{cgroups.parent}: would remove the claim of stopped daemon pid 999999999" in r.stdout
    assert "trusted.memcgctl.daemon" in os.listxattr(d)  # a dry run
    r = invoke(env, "daemon", "--release", "--root", cgroups.parent)
    assert r.exit_code == 0, r.output
    assert "trusted.memcgctl.daemon" not in os.listxattr(d)
    assert "trusted.memcgctl.daemon_root" not in os.listxattr(cgroups.path(cgroups.parent))


_DAEMON_AS_NOBODY = (
    "import os, sys\n"
    "import ctypes.util, tempfile, json, select, selectors\n"
    "from tests.test_hostile import _import_everything\n"
    "_import_everything()\n"
    "from memcgctl.cli import main\n"
    "os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


@needs_root
@pytest.mark.kernel
def test_daemon_dry_run_as_non_root_says_one_line(cgroups: TestCgroups) -> None:
    """Trying the shadow mode as another user: one line says what it runs without (no
    claim, no mlock, no kernel log), not three warnings."""
    import signal
    import time

    cgroups.make("job", limit=64 << 20)
    state = Path(tempfile.mkdtemp(prefix="memcgctl-i24-"))
    os.chmod(state, 0o755)
    os.chown(state, NOBODY, NOBODY)
    try:
        p = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _DAEMON_AS_NOBODY,
                "daemon",
                "--dry-run",
                "--root",
                cgroups.parent,
            ],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "MEMCGCTL_STATE_DIR": str(state / "s")},
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert p.stderr is not None
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            lines.append(line)
            if "daemon_started" in line or not line:
                break
        p.send_signal(signal.SIGTERM)
        lines += p.stderr.readlines()
        p.wait(timeout=20)
    finally:
        shutil.rmtree(state)
    warnings = [ln for ln in lines if ln.startswith("<4>")]
    assert len(warnings) == 1, lines
    assert "not root (uid 65534): shadow mode without a claim" in warnings[0]
    assert any("daemon_started" in ln for ln in lines), lines
    assert p.returncode == 0, lines
    assert "trusted.memcgctl.daemon_root" not in os.listxattr(cgroups.path(cgroups.parent))


# -- item 4: one OOM, one pair of lines per OOM domain ------------------------------------


@pytest.mark.kernel
def test_one_oom_is_one_under_oom_and_one_resolved_per_domain(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    """A kernel OOM in /demo (children: an empty one with its own limit, and the one the
    grower runs in): two ``events --follow --json`` print one under_oom and one
    oom_resolved, for /demo only, with the same time, the under_oom before the kill;
    the history shows the under_oom too."""
    from tests.test_events_kernel import Follow, grower, watching

    demo = cgroups.make("demo", limit=48 << 20)
    empty = cgroups.make("demo/empty", limit=32 << 20)
    busy = cgroups.make("demo/busy", limit=128 << 20)
    followers = [Follow(tmp_path / f"state{i}", cgroups.parent) for i in range(2)]
    try:
        for f in followers:
            for cg in (demo, empty, busy):
                watching(f, cgroups, cg)
        g = grower(cgroups, busy, max_mib=200)
        for f in followers:
            f.wait_for(lambda e: e["kind"] == "oom_kill" and e.get("pid") == g.pid)
            f.wait_for(lambda e: e["kind"] == "oom_resolved" and e["cgroup"] == demo)
        g.wait(timeout=10)
    finally:
        errs = [f.stop() for f in followers]
    assert all("Traceback" not in e for e in errs), errs
    ours = [[e for e in f.events if str(e.get("cgroup", "")).startswith(demo)] for f in followers]
    for evs in ours:
        kinds = [
            (e["kind"], e["cgroup"]) for e in evs if e["kind"] in ("under_oom", "oom_resolved")
        ]
        assert kinds == [("under_oom", demo), ("oom_resolved", demo)], evs
        order = [e["kind"] for e in evs if e["kind"] in ("under_oom", "oom_kill")]
        assert order[:2] == ["under_oom", "oom_kill"], evs
    stamps = [next(e["time"] for e in evs if e["kind"] == "under_oom") for evs in ours]
    assert stamps[0] == stamps[1], json.dumps(ours)
    kill = next(e for e in ours[0] if e["kind"] == "oom_kill")
    assert stamps[0] <= kill["time"]
    r = invoke({"MEMCGCTL_STATE_DIR": str(tmp_path / "state0")}, "events", demo, "--json")
    assert r.exit_code == 0, r.output
    history = json.loads(r.stdout)["events"]
    starts = [e for e in history if e["kind"] == "under_oom"]
    assert [(e["cgroup"], e["time"]) for e in starts] == [(demo, stamps[0])], history
    assert history.index(starts[0]) < history.index(
        next(e for e in history if e["kind"] == "oom_kill" and e.get("pid") == kill["pid"])
    )


def test_history_under_oom_one_per_episode_and_not_twice() -> None:
    from memcgctl.logic.events import oom_starts

    def kill(t: str, seq: int, domain: str = "/d", cause: str = "memcg") -> dict[str, object]:
        return {
            "time": f"2026-01-01T00:00:{t}Z",
            "kind": "oom_kill",
            "cgroup": f"{domain}/x",
            "oom_memcg": domain,
            "cause": cause,
            "dedup": f"b:{seq}",
        }

    kernel = [
        kill("01.000000", 1),
        kill("01.300000", 2),  # a second kill of the same episode
        kill("05.000000", 3),  # a new OOM of the same domain
        kill("06.000000", 4, "/", "system"),  # host-wide: no memcg ran out
        kill("09.000000", 5, "/e"),  # the daemon said so already
    ]
    invoked = {"b:1": "2026-01-01T00:00:00.990000Z"}
    daemon = [{"time": "2026-01-01T00:00:08.500000Z", "kind": "under_oom", "cgroup": "/e"}]
    starts = oom_starts(kernel, invoked, daemon)  # type: ignore[arg-type]
    assert [(e["time"], e["cgroup"], e["source"]) for e in starts] == [
        ("2026-01-01T00:00:00.990000Z", "/d", "kmsg"),
        ("2026-01-01T00:00:05.000000Z", "/d", "kmsg"),
    ]


# -- item 5: 80 columns, a long name --------------------------------------------------


def test_tree_at_80_columns_shortens_a_long_name_before_dropping_badness(
    fake_v1: FakeHost,
) -> None:
    from tests.test_tables_pty import on_pty

    long = "nc-demo-" + "x" * 40 + "-tail7"
    fake_v1.cgroup("/batch", limit=512 << 20, usage=100 << 20, badness=100)
    fake_v1.cgroup(f"/batch/{long}", limit=256 << 20, usage=123_456_789, badness=40)
    fake_v1.process(1, "/", comm="init", rss_anon_kb=100)
    text = on_pty(fake_v1, 80, "tree")
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    assert lines[0].split()[:4] == ["CGROUP", "USAGE", "LIMIT", "BAD"], text
    row = next(line for line in lines if "nc-demo-" in line)
    assert "…" in row and row.split()[1].startswith("nc-demo-") and "-tail7" in row
    assert "40t" in row and "117.7M" in row and "256.0M" in row
    # --wide and a pipe: the whole name
    assert long in on_pty(fake_v1, 80, "tree", "--wide")


@pytest.mark.kernel
def test_explain_kill_says_when_a_badness_entry_is_gone(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    """The victim had a process badness (5) when the kernel killed it; the registry
    prunes it with the process, so explain-kill cannot know it any more: it says so
    rather than call its default-500 ranking the same as what the daemon saw."""
    from tests.realkernel import HELPERS

    cg = cgroups.make("gone", limit=32 << 20)
    sleeper = cgroups.sleeper(cg)
    grower = cgroups.spawn(
        cg, [sys.executable, str(HELPERS / "grow.py"), "1024", "200"], ready=False
    )
    env = {"MEMCGCTL_STATE_DIR": str(tmp_path / "state")}
    r = invoke(env, "set-badness", "--pid", str(grower.pid), "5")
    assert r.exit_code == 0, r.output
    assert grower.stdout is not None
    grower.stdout.readline()
    assert grower.wait(timeout=60) == -9
    r = invoke(env, "set-badness", "--pid", str(sleeper.pid), "900")  # prunes the dead one
    assert r.exit_code == 0, r.output
    assert str(grower.pid) not in (tmp_path / "state" / "badness.json").read_text()
    x = invoke(env, "explain-kill", str(grower.pid), "--json")
    assert x.exit_code == 0, x.output
    doc = json.loads(x.stdout)
    notes = [n for n in doc["priority_notes"] if f"pid {grower.pid} (python" in n]
    assert len(notes) == 1 and "pruned" in notes[0], doc["priority_notes"]
    assert f"pid {sleeper.pid}" not in notes[0]  # alive: its 900 is known
    text = invoke(env, "explain-kill", str(grower.pid)).stdout
    assert "pruned with the process" in text


# -- tree -p: the processes in each cgroup, as systemd-cgls ------------------------------


@pytest.mark.kernel
def test_tree_processes_lists_each_cgroups_own_processes(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    a = cgroups.make("a", limit=64 << 20)
    b = cgroups.make("a/b", limit=64 << 20)
    pa = cgroups.hog(a, mib=2)
    pb = cgroups.sleeper(b)
    env = {"MEMCGCTL_STATE_DIR": str(tmp_path / "state")}
    assert invoke(env, "set-badness", "--pid", str(pb.pid), "42").exit_code == 0
    r = invoke(env, "tree", a, "-p")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    rows = [ln.split() for ln in lines[1:]]
    # a's own process first, then its child cgroup with its process (kernel's pids)
    labels = [re.match(r"^(\s*\S.*?)(?=\s{2,}|$)", ln) for ln in lines[1:]]
    comm = Path(f"/proc/{pa.pid}/comm").read_text().strip()  # python or python3: the venv's
    assert [m.group(1) if m else None for m in labels] == [
        a,
        f"├─ {pa.pid} {comm}",
        "└─ b",
        f"   └─ {pb.pid} sleep",
    ]
    assert cgroups.pids(a) == [pa.pid] and cgroups.pids(b) == [pb.pid]
    assert rows[3][4:6] == ["42", "(process)"], rows[3]
    r = invoke(env, "tree", a, "--processes", "--json")
    doc = json.loads(r.stdout)
    assert {(p["pid"], p["cgroup"]) for p in doc["processes"]} == {(pa.pid, a), (pb.pid, b)}
    assert "processes" not in json.loads(invoke(env, "tree", a, "--json").stdout)


# -- run --wait / --collect / --uid / --setenv (systemd-run's) ---------------------------


def _memcgctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memcgctl", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.kernel
def test_run_wait_collect_summarises_a_real_oom_and_removes_the_cgroup(
    cgroups: TestCgroups, tmp_path: Path
) -> None:
    from tests.realkernel import HELPERS

    env = {"MEMCGCTL_STATE_DIR": str(tmp_path / "state")}
    job = f"{cgroups.parent}/jobs/oomer"
    grow = [sys.executable, str(HELPERS / "grow.py"), "1024", "200"]
    r = _memcgctl(
        env, "run", "-c", job, "-m", "32M", "-b", "10", "--wait", "--collect", "--", *grow
    )
    assert r.returncode == 128 + signal.SIGKILL, r.stderr
    summary = r.stderr.splitlines()
    assert summary[:2] == [
        "Finished with result: oom-kill",
        "Main process terminated with: code=killed, status=9/KILL",
    ], r.stderr
    assert summary[2].startswith("Runtime: ")
    peak = next(ln for ln in summary if ln.startswith("Memory peak: "))
    assert peak.endswith(f"({job})") and ("32.0M" in peak or "31." in peak), peak
    assert "OOM kills: 1" in summary
    # the kernel's own record of it: one kill of the child in our cgroup
    ev = json.loads(invoke(env, "events", cgroups.parent, "--json").stdout)["events"]
    kills = [e for e in ev if e["kind"] == "oom_kill" and e.get("cgroup") == job]
    assert len(kills) == 1, ev
    # --collect removed what run created (jobs and jobs/oomer), and only that
    assert not cgroups.path(job).exists() and not cgroups.path(f"{cgroups.parent}/jobs").exists()
    assert cgroups.path(cgroups.parent).exists()


@needs_root
@pytest.mark.kernel
def test_run_uid_setenv_and_exit_status(cgroups: TestCgroups, tmp_path: Path) -> None:
    env = {"MEMCGCTL_STATE_DIR": str(tmp_path / "state"), "KEEP": "kept"}
    job = f"{cgroups.parent}/u"
    probe = 'id -u; echo "$FOO/$KEEP/${GONE-unset}"; cat /proc/self/cgroup | grep :memory:; exit 7'
    modes: list[list[str]] = [["--wait", "--collect"], []]
    for mode in modes:
        r = _memcgctl(
            {**env, "GONE": "x"},
            "run",
            "-c",
            job,
            "-m",
            "16M",
            "--uid",
            "nobody",
            "-E",
            "FOO=bar",
            "-E",
            "KEEP",
            "-E",
            "GONE=",
            *mode,
            "--",
            "sh",
            "-c",
            probe,
        )
        assert r.returncode == 7, r.stderr
        uid, envline, memcg = r.stdout.splitlines()
        assert uid == str(NOBODY) and envline == "bar/kept/" and memcg.endswith(f":memory:{job}")
        if mode:
            assert "Finished with result: exit-code" in r.stderr
            assert "Main process terminated with: code=exited, status=7" in r.stderr
            assert "OOM kills: 0" in r.stderr
            assert not cgroups.path(job).exists()
        else:
            cgroups.dirs.append(cgroups.path(job))
    r = _memcgctl(env, "run", "--collect", "--", "true")
    assert r.returncode == 2 and "--collect needs --cgroup" in r.stderr
    r = _memcgctl(env, "run", "--uid", "no-such-user-i24", "--", "true")
    assert r.returncode == 2 and "no such user" in r.stderr
