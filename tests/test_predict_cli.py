"""``predict-victim`` on fixture trees: options, JSON shape, explanation, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from memcgctl.cli import cli
from tests.fakehost import FakeHost

MIB = 1 << 20


def _host(fake: FakeHost) -> None:
    fake.cgroup("/batch", limit=512 * MIB, usage=300 * MIB, badness=100)
    fake.cgroup("/batch/a", usage=200 * MIB)
    fake.cgroup("/batch/b", usage=100 * MIB)
    fake.cgroup("/web", limit=256 * MIB, usage=50 * MIB, badness=900)
    fake.process(1, "/", comm="init", rss_anon_kb=5000)
    fake.process(10, "/batch/a", comm="small", rss_anon_kb=1000)
    fake.process(11, "/batch/a", comm="big", rss_anon_kb=90_000)
    fake.process(12, "/batch/b", comm="other", rss_anon_kb=10_000)
    fake.process(20, "/web", comm="nginx", rss_anon_kb=200_000, oom_score_adj=300)


def _run(runner: CliRunner, fake: FakeHost, *args: str) -> tuple[int, str, str]:
    r = runner.invoke(cli, list(args), env=fake.cli_env(), catch_exceptions=False)
    return r.exit_code, r.stdout, r.stderr


def test_priority_json_shape(fake_v1: FakeHost, runner: CliRunner) -> None:
    _host(fake_v1)
    code, out, _ = _run(runner, fake_v1, "predict-victim", "--json")
    assert code == 0
    doc = json.loads(out)
    assert {
        "oom_root",
        "policy",
        "victim",
        "kill_group",
        "group_pids",
        "walk",
        "candidates",
    } <= set(doc)
    assert doc["oom_root"] == "/" and doc["policy"] == "priority"
    assert doc["victim"]["pid"] == 11 and doc["victim"]["comm"] == "big"
    assert doc["kill_group"] is None and doc["group_pids"] == [11]
    assert [lv["cgroup"] for lv in doc["walk"]] == ["/", "/batch", "/batch/a"]
    assert doc["walk"][0]["chosen"]["cgroup"] == "/batch"
    # the victim alone is ranked without --top; the same entry keys as the kernel's
    assert [(c["rank"], c["pid"], c["points"]) for c in doc["candidates"]] == [(1, 11, None)]
    assert "runners_up" not in doc


def test_kernel_json_ranked_with_points(fake_v1: FakeHost, runner: CliRunner) -> None:
    _host(fake_v1)
    code, out, _ = _run(runner, fake_v1, "predict-victim", "--policy", "kernel", "--json")
    assert code == 0
    doc = json.loads(out)
    # host OOM: 16 GiB -> 4194 pages per adj point: nginx 50000 + 300*4194
    assert doc["victim"]["pid"] == 20
    assert doc["victim"]["points"] == 50_000 + 300 * 4194
    assert [c["pid"] for c in doc["candidates"]] == [20, 11, 12, 10]  # init never
    assert doc["walk"] == []
    # a memcg OOM of /batch: 131072 pages -> 131 per adj point
    code, out, _ = _run(runner, fake_v1, "predict-victim", "/batch", "--policy", "kernel", "--json")
    doc = json.loads(out)
    assert doc["totalpages"] == 512 * MIB // 4096
    assert doc["victim"]["pid"] == 11


def test_explain_plain_reads_as_a_tree(fake_v1: FakeHost, runner: CliRunner) -> None:
    _host(fake_v1)
    code, out, _ = _run(runner, fake_v1, "predict-victim", "--explain")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("OOM root / — policy priority")
    assert any(line.startswith("├─ ► cgroup batch  badness 100 (trusted)") for line in lines)
    assert any("└─ the victim" in line for line in lines)
    assert any(
        "web  badness 900 (trusted)" in line and "badness 900 > 100" in line for line in lines
    )
    assert "skipped: init" in out
    assert "victim: pid 11 (big) in /batch/a" in out
    assert "Why:" in out


def test_kernel_explain_lists_caveats_and_top(fake_v1: FakeHost, runner: CliRunner) -> None:
    _host(fake_v1)
    code, out, _ = _run(
        runner, fake_v1, "predict-victim", "--policy", "kernel", "--explain", "--top", "2"
    )
    assert code == 0
    assert "… 2 more (raise --top to see them)" in out
    assert "ranked by the kernel" in out
    assert "Where userspace cannot be exact:" in out
    assert "per-CPU" in out and "pid order" in out


def test_top_priority_runners_up(fake_v1: FakeHost, runner: CliRunner) -> None:
    _host(fake_v1)
    code, out, _ = _run(runner, fake_v1, "predict-victim", "--top", "5", "--json")
    assert code == 0
    doc = json.loads(out)
    assert [r["victim"]["pid"] for r in doc["runners_up"]] == [11, 10, 12, 20]
    assert [c["pid"] for c in doc["candidates"]] == [11, 10, 12, 20]


def test_both_policies_have_the_same_keys(fake_v1: FakeHost, runner: CliRunner) -> None:
    _host(fake_v1)
    docs = {}
    for policy in ("priority", "kernel"):
        code, out, _ = _run(
            runner, fake_v1, "predict-victim", "--policy", policy, "--top", "2", "--json"
        )
        assert code == 0
        docs[policy] = json.loads(out)
    assert set(docs["priority"]) == set(docs["kernel"])
    for key in ("candidates", "runners_up"):
        shapes = {p: [set(c) for c in docs[p][key]] for p in docs}
        assert len(shapes["kernel"]) == 2 and len(shapes["priority"]) == 2
        assert shapes["priority"][0] <= shapes["kernel"][0]
    assert {"rank", "points", "kill_group", "group_pids", "pid"} <= set(
        docs["priority"]["candidates"][0]
    )
    assert set(docs["priority"]["runners_up"][0]) == set(docs["kernel"]["runners_up"][0])
    _, out, _ = _run(runner, fake_v1, "predict-victim", "--top", "3", "--plain")
    assert "next in line" in out


def test_pid_names_the_oom_root(fake_v1: FakeHost, runner: CliRunner) -> None:
    _host(fake_v1)
    code, out, _ = _run(runner, fake_v1, "predict-victim", "--pid", "12", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["oom_root"] == "/batch/b" and doc["victim"]["pid"] == 12


def test_no_victim_exits_1(fake_v1: FakeHost, runner: CliRunner) -> None:
    fake_v1.cgroup("/empty", limit=MIB)
    fake_v1.cgroup("/never", badness=1000)
    fake_v1.process(30, "/never")
    code, out, err = _run(runner, fake_v1, "predict-victim", "/empty")
    assert code == 1
    assert "no killable victim" in err
    # the whole host: /never is skipped (1000), /empty holds nothing
    code, out, _ = _run(runner, fake_v1, "predict-victim", "--json")
    assert code == 1 and json.loads(out)["victim"] is None
    # the OOM root's own badness does not protect what is inside it: it ran out itself
    code, out, _ = _run(runner, fake_v1, "predict-victim", "/never", "--json")
    assert code == 0 and json.loads(out)["victim"]["pid"] == 30
    code, out, _ = _run(runner, fake_v1, "predict-victim", "/empty", "--policy", "kernel")
    assert code == 1


def test_bad_input(fake_v1: FakeHost, runner: CliRunner) -> None:
    _host(fake_v1)
    code, _, err = _run(runner, fake_v1, "predict-victim", "/nope")
    assert code == 3 and "/nope" in err
    code, _, _ = _run(runner, fake_v1, "predict-victim", "--policy", "biggest")
    assert code == 2
    code, _, _ = _run(runner, fake_v1, "predict-victim", "--top", "0")
    assert code == 2
    code, _, err = _run(runner, fake_v1, "predict-victim", "../x")
    assert code == 2
    code, _, err = _run(runner, fake_v1, "predict-victim", "--pid", "999")
    assert code == 3
    code, _, err = _run(runner, fake_v1, "predict-victim", "/batch", "--pid", "10")
    assert code == 2


def test_v2_group_kill_in_json(fake_v2: FakeHost, runner: CliRunner) -> None:
    fake_v2.cgroup("/svc", limit=64 * MIB, oom_group=True)
    fake_v2.cgroup("/svc/w", usage=10 * MIB)
    fake_v2.process(10, "/svc/w", rss_anon_kb=9000)
    fake_v2.process(11, "/svc", rss_anon_kb=10)
    fake_v2.process(12, "/svc", oom_score_adj=-1000)
    for policy in ("priority", "kernel"):
        code, out, _ = _run(runner, fake_v2, "predict-victim", "/svc", "--policy", policy, "--json")
        assert code == 0
        doc = json.loads(out)
        assert doc["victim"]["pid"] == 10
        assert doc["kill_group"]["cgroup"] == "/svc"
        assert doc["group_pids"] == [10, 11]
    code, out, _ = _run(runner, fake_v2, "predict-victim", "/svc")
    assert "memory.oom.group: all of /svc dies (2 pids: 10 11)" in out


def test_cli_subprocess_plain_output_without_rich(fake_v1: FakeHost) -> None:
    """Piped text never draws with rich; the summary-only path does not import it."""
    _host(fake_v1)
    code = (
        "import sys; from memcgctl.cli import main; rc = main(sys.argv[1:]); "
        "assert 'rich' not in sys.modules and 'tabulate' not in sys.modules; sys.exit(rc)"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, "predict-victim", "--policy", "kernel"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        env={**fake_v1.cli_env(), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("victim: pid 20 (nginx) in /web")
