"""tree/ps/badness/delay commands on fixture trees, and the bad-input matrix."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from memcgctl.cli import cli
from tests.fakehost import FakeHost
from tests.realkernel import import_everything, subdirs


def run(host: FakeHost, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=host.cli_env())


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    fake_v1.cgroup("/batch", limit=512 << 20, usage=100 << 20, badness=100)
    fake_v1.cgroup("/batch/job1", limit=256 << 20, usage=90 << 20)
    fake_v1.cgroup("/svc", delay_ms=2000)
    fake_v1.process(1, "/", comm="init", rss_anon_kb=100)
    fake_v1.process(200, "/batch/job1", comm="worker one", rss_anon_kb=50_000)
    fake_v1.process(300, "/svc", comm="api", rss_anon_kb=10_000, oom_score_adj=-1000)
    return fake_v1


def state(host: FakeHost) -> dict[str, object]:
    """Everything a command could change: xattrs of every cgroup, the registry."""
    out: dict[str, object] = {}
    for d in [host.cgroot, *sorted(host.cgroot.rglob("*"))]:
        if d.is_dir():
            out[str(d)] = {n: os.getxattr(d, n) for n in os.listxattr(d)}
    reg = host.state / "badness.json"
    out["registry"] = reg.read_text() if reg.exists() else None
    return out


def test_tree_json_and_plain(host: FakeHost) -> None:
    r = run(host, "tree", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    by = {c["cgroup"]: c for c in doc["cgroups"]}
    assert list(by) == ["/", "/batch", "/batch/job1", "/svc"]
    assert by["/batch"]["badness"] == 100 and by["/batch"]["badness_source"] == "trusted"
    assert by["/svc"]["oom_delay_ms"] == 2000
    assert by["/batch/job1"]["nr_tasks"] == 1
    r = run(host, "tree", "--plain")
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["CGROUP", "USAGE", "LIMIT"]
    assert any("└─ job1" in line and "100 (trusted)" not in line for line in lines)
    assert "rich" not in r.stdout


def test_ps_json_sources(host: FakeHost) -> None:
    r = run(host, "ps", "--json")
    procs = {p["pid"]: p for p in json.loads(r.stdout)["processes"]}
    assert procs[300]["badness"] == 1000 and procs[300]["badness_source"] == "oom_score_adj"
    assert procs[200]["comm"] == "worker one" and procs[200]["rss_kb"] == 50_000
    r = run(host, "ps", "/batch", "--json")
    assert [p["pid"] for p in json.loads(r.stdout)["processes"]] == [200]


def test_ps_pid_option_names_its_cgroup(host: FakeHost) -> None:
    r = run(host, "ps", "--pid", "200", "--json")
    assert json.loads(r.stdout)["root"] == "/batch/job1"


def test_set_and_get_badness_cgroup(host: FakeHost) -> None:
    r = run(host, "set-badness", "batch/job1", "7")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "/batch/job1: set badness 7 (trusted), was 500 (default)"
    assert os.getxattr(host.cgroot / "batch/job1", "trusted.memcgctl.badness") == b"7"
    r = run(host, "get-badness", "/batch/job1", "--json")
    assert json.loads(r.stdout) == {
        "cgroups": [{"cgroup": "/batch/job1", "badness": 7, "badness_source": "trusted"}],
        "processes": [],
    }
    r = run(host, "set-badness", "/batch/job1", "default")
    assert "set badness 500 (default), was 7 (trusted)" in r.stdout
    assert "trusted.memcgctl.badness" not in os.listxattr(host.cgroot / "batch/job1")


def test_set_badness_dry_run_changes_nothing(host: FakeHost) -> None:
    before = state(host)
    r = run(host, "set-badness", "/svc", "3", "--dry-run")
    assert r.exit_code == 0 and "would set badness 3" in r.stdout
    assert state(host) == before


def test_set_and_get_badness_process(host: FakeHost) -> None:
    r = run(host, "set-badness", "--pid", "200", "20", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (doc["badness"], doc["badness_source"], doc["start_time"]) == (20, "process", 1200)
    r = run(host, "get-badness", "--pid", "200", "--pid", "300", "--json")
    procs = json.loads(r.stdout)["processes"]
    assert [(i["pid"], i["badness"], i["badness_source"]) for i in procs] == [
        (200, 20, "process"),
        (300, 1000, "oom_score_adj"),
    ]
    # explicit badness beats oom_score_adj -1000
    run(host, "set-badness", "--pid", "300", "30")
    r = run(host, "ps", "--json")
    procs = {p["pid"]: p for p in json.loads(r.stdout)["processes"]}
    assert (procs[300]["badness"], procs[300]["badness_source"]) == (30, "process")


def test_recycled_pid_does_not_inherit(host: FakeHost) -> None:
    run(host, "set-badness", "--pid", "200", "20")
    host.remove_process(200)
    host.process(200, "/batch/job1", comm="newcomer", start_time=99999)
    r = run(host, "get-badness", "--pid", "200", "--json")
    assert json.loads(r.stdout)["processes"][0]["badness_source"] == "default"


def test_get_badness_all(host: FakeHost) -> None:
    run(host, "set-badness", "--pid", "200", "20")
    r = run(host, "get-badness")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["TARGET", "BADNESS", "SOURCE"]
    assert any(line.split() == ["/batch", "100", "trusted"] for line in lines)
    assert any(line.startswith("pid 200 (worker one)") for line in lines)


def test_delay_roundtrip(host: FakeHost) -> None:
    r = run(host, "set-delay", "/batch", "1.5s")
    assert r.stdout.strip() == "/batch: set OOM delay 1500ms (trusted), was off"
    r = run(host, "get-delay", "/batch", "/svc", "--json")
    assert [(i["cgroup"], i["oom_delay_ms"]) for i in json.loads(r.stdout)["cgroups"]] == [
        ("/batch", 1500),
        ("/svc", 2000),
    ]
    run(host, "set-delay", "/batch", "0")
    assert os.getxattr(host.cgroot / "batch", "trusted.memcgctl.oom_delay_ms") == b"0"
    r = run(host, "set-delay", "/batch", "off")
    assert "set OOM delay off, was 0 (trusted)" in r.stdout


# -- the bad-input matrix ---------------------------------------------------------------

BAD = [
    # (argv, exit code, expected fragment of the one stderr line)
    (["tree", "/nope"], 3, "/nope: no such cgroup"),
    (["ps", "/nope"], 3, "/nope: no such cgroup"),
    (["tree", "--pid", "4242"], 3, "pid 4242: no such process"),
    (["ps", "--pid", "4242"], 3, "pid 4242"),
    (["tree", "/batch/../.."], 2, "leave the cgroup hierarchy"),
    (["ps", "../etc"], 2, "leave the cgroup hierarchy"),
    (["set-badness", "/nope", "5"], 3, "/nope: no such cgroup"),
    (["set-badness", "/batch", "abc"], 2, "must be an integer"),
    (["set-badness", "/batch", "1001"], 2, "between 0 and 1000"),
    (["set-badness", "/batch", "-3"], 2, "No such option"),
    (["set-badness", "/batch", "5", "--namespace", "bogus"], 2, "Invalid value"),
    (["ps", "--sort", "size"], 2, "Invalid value"),
    (["frobnicate"], 2, "No such command"),
    (["set-badness", "/batch"], 2, "usage"),
    (["set-badness", "--pid", "4242", "5"], 3, "pid 4242: no such process"),
    (["set-badness", "--pid", "200", "x"], 2, "must be an integer"),
    (["set-badness", "--pid", "0", "5"], 2, "not a valid pid"),
    (["set-badness", "..", "5"], 2, "leave the cgroup hierarchy"),
    (["get-badness", "/nope"], 3, "/nope: no such cgroup"),
    (["get-badness", "--pid", "4242"], 3, "pid 4242"),
    (["set-delay", "/nope", "2s"], 3, "/nope: no such cgroup"),
    (["set-delay", "/batch", "2"], 2, "give a unit"),
    (["set-delay", "/batch", "soon"], 2, "not a duration"),
    (["set-delay", "/batch", "25h"], 2, "longer than 24h"),
    (["set-delay", "/a/../..", "2s"], 2, "leave the cgroup hierarchy"),
    (["get-delay", "/nope"], 3, "/nope: no such cgroup"),
    (["tree", "/batch", "--pid", "200"], 2, "not both"),
    # issue 12 item 9: values are parsed strictly (ASCII digits, finite numbers)
    (["set-badness", "/batch", "５"], 2, "must be an integer"),
    (["set-badness", "/batch", "٣"], 2, "must be an integer"),
    (["set-badness", "--pid", "200", "٣"], 2, "must be an integer"),
    (["set-delay", "/batch", "١s"], 2, "not a duration"),
    (["set-delay", "/batch", "５00ms"], 2, "not a duration"),
    (["ps", "--pid", "٢٠٠"], 2, "not a whole number"),
    (["predict-victim", "--top", "٣"], 2, "not a whole number"),
    (["kill-all", "/batch", "--timeout", "nan"], 2, "number of seconds"),
    (["kill-all", "/batch", "--timeout", "inf"], 2, "number of seconds"),
    (["kill-all", "/batch", "--timeout", "-1"], 2, "number of seconds"),
    (["kill-all", "/batch", "--timeout", "1e9"], 2, "number of seconds"),
    (["kill-all", "/batch", "--timeout", "90000"], 2, "longer than 86400s"),
    (["kill-all", "/batch", "--grace", "NaN", "--signal", "TERM"], 2, "number of seconds"),
    (["kill-all", "/batch", "--signal", "٩"], 2, "unknown signal"),
    # issue 21: names no cgroup can have (a component past NAME_MAX, a path past PATH_MAX)
    (["tree", "/" + "x" * 300], 3, "no such cgroup"),
    (["get-delay", "/" + "/".join(["y" * 250] * 20)], 3, "no such cgroup"),
    (["predict-victim", "/batch/" + "/".join(["d"] * 1100)], 3, "no such cgroup"),
    (["kill-all", "/" + "z" * 256], 3, "no such cgroup"),
]


@pytest.mark.parametrize(("argv", "code", "fragment"), BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input(host: FakeHost, argv: list[str], code: int, fragment: str) -> None:
    before = state(host)
    r = run(host, *argv)
    assert r.exit_code == code, r.output
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert fragment in r.stderr
    assert state(host) == before


@pytest.fixture
def world_readable_host() -> Iterator[FakeHost]:
    base = Path(tempfile.mkdtemp(prefix="memcgctl-perm-"))
    os.chmod(base, 0o755)
    try:
        host = FakeHost(base, version=1)
        host.cgroup("/a")
        host.process(200, "/a")
        for p in [base, *base.rglob("*")]:
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        yield host
    finally:
        shutil.rmtree(base)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged uid")
@pytest.mark.parametrize(
    "argv",
    [["set-badness", "/a", "5"], ["set-delay", "/a", "1s"], ["set-badness", "--pid", "200", "5"]],
)
def test_no_permission_is_exit_4(world_readable_host: FakeHost, argv: list[str]) -> None:
    host = world_readable_host
    before = state(host)
    import_everything()  # nobody may not read the code (a clone in a 0700 directory)
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            r = run(host, *argv)
            os.write(wfd, json.dumps([r.exit_code, r.stderr, r.stdout]).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        code, stderr, stdout = json.loads(f.read())
    os.waitpid(child, 0)
    assert code == 4, stderr
    assert stdout == "" and len(stderr.splitlines()) == 1 and "permission denied" in stderr
    assert state(host) == before


# -- depth and count (issue 21): what a user may create, no traceback anywhere ---------

DEPTH = 1100  # past Python's recursion limit (1000)


def remove_deep(top: Path) -> None:
    """rm -r without recursion (shutil.rmtree and pytest's tmp_path cleanup recurse per
    level, and fail on this tree)."""
    dirs = [top, *subdirs(top)]
    for d in reversed(dirs):  # children before their parents
        with os.scandir(d) as it:
            for e in it:
                if not e.is_dir(follow_symlinks=False):
                    os.unlink(e.path)
        os.rmdir(d)


@pytest.fixture(scope="module")
def deep_host() -> Iterator[tuple[FakeHost, str, str]]:
    """A chain DEPTH cgroups deep with a process at the bottom, beside 1,000 siblings
    (built once for the module, in a directory removed without recursion)."""
    base = Path(tempfile.mkdtemp(prefix="memcgctl-deep-"))
    try:
        host = FakeHost(base, version=1)
        host.cgroup("/deep", limit=64 << 20)
        cg = "/deep"
        for _ in range(DEPTH):
            cg += "/d"
            host.cgroup(cg)  # parents first: Path.mkdir(parents=True) itself recurses
        for i in range(1000):
            host.cgroup(f"/wide/c{i:04}")
        host.process(600, "/wide/c0999", comm="wide", rss_anon_kb=500, oom_score_adj=-1000)
        host.process(500, cg, comm="bottom", rss_anon_kb=1_000)
        yield host, "/deep", cg
    finally:
        remove_deep(base)


@pytest.mark.parametrize(
    "argv",
    [
        ["tree"],
        ["tree", "--json"],
        ["ps"],
        ["ps", "--json"],
        ["predict-victim", "/deep"],
        ["predict-victim", "/deep", "--explain", "--plain"],
        ["predict-victim", "/", "--json"],
        ["predict-victim", "/", "--policy", "kernel"],
        ["counters", "/wide"],
        ["counters", "--json"],
        ["get-delay", "BOTTOM"],
        ["get-badness", "BOTTOM"],
        ["kill-all", "/deep", "--dry-run"],
        ["tree", "BOTTOM"],
    ],
    ids=lambda a: " ".join(a),
)
def test_a_tree_deeper_than_the_recursion_limit(
    deep_host: tuple[FakeHost, str, str], argv: list[str]
) -> None:
    host, _, bottom = deep_host
    r = run(host, *[bottom if a == "BOTTOM" else a for a in argv])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert r.exit_code == 0, r.stderr[-500:]
    assert "Traceback" not in r.output
    if argv[:2] == ["tree", "--json"]:
        doc = json.loads(r.stdout)
        paths = {c["cgroup"] for c in doc["cgroups"]}
        assert bottom in paths and len(paths) >= DEPTH + 1000
    if argv[0] == "predict-victim" and argv[-1] != "kernel":
        assert "500" in r.stdout  # the only killable process is at the bottom
    if argv[:2] == ["kill-all", "/deep"]:
        assert "500" in r.stdout
