"""One JSON grammar (docs/commands.md, "JSON for scripts"): ``--json`` prints ONE document, an object,
for every command; list results are objects with a named array; streams and
``--json-lines`` are one object per line."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from tests.fakehost import FakeHost

MIB = 1 << 20

# every command that takes --json, with arguments that work on the fixture host
RUNS: dict[str, list[str]] = {
    "tree": ["tree"],
    "ps": ["ps"],
    "get-badness": ["get-badness"],
    "set-badness": ["set-badness", "/svc", "3"],
    "get-delay": ["get-delay"],
    "set-delay": ["set-delay", "/svc", "2s"],
    "predict-victim": ["predict-victim", "--top", "2"],
    "kill-all": ["kill-all", "/batch/job1", "--dry-run"],
    "events": ["events"],
    "counters": ["counters"],
    "set-limit": ["set-limit", "/batch/job1", "200M", "--dry-run"],
    "apply": ["apply", "--dry-run"],
}
# named arrays of the list results
ARRAYS = {
    "tree": "cgroups",
    "ps": "processes",
    "get-badness": "cgroups",
    "get-delay": "cgroups",
    "predict-victim": "candidates",
    "events": "events",
    "counters": "cgroups",
    "apply": "changes",
}


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    fake_v1.cgroup("/batch", limit=512 * MIB, usage=100 * MIB, badness=100)
    fake_v1.cgroup("/batch/job1", limit=256 * MIB, usage=90 * MIB)
    fake_v1.cgroup("/svc", delay_ms=2000)
    fake_v1.process(1, "/", comm="init", rss_anon_kb=100)
    fake_v1.process(200, "/batch/job1", comm="worker", rss_anon_kb=50_000)
    fake_v1.process(300, "/svc", comm="api", rss_anon_kb=10_000)
    return fake_v1


def commands_with_json() -> set[str]:
    ctx = click.Context(cli)
    out = set()
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        if any("--json" in p.opts for p in cmd.params if isinstance(p, click.Option)):
            out.add(name)
    return out


def test_every_json_command_is_covered() -> None:
    # status exits 1 without a running daemon: tests/test_daemon_status.py runs one
    assert commands_with_json() - set(RUNS) <= {"explain-kill", "status"}, "add it to RUNS"


@pytest.mark.parametrize("name", sorted(RUNS))
def test_json_is_one_document(host: FakeHost, name: str) -> None:
    r = CliRunner().invoke(cli, [*RUNS[name], "--json"], env=host.cli_env())
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # one document: "Extra data" would fail here
    assert isinstance(doc, dict)
    if name in ARRAYS:
        assert isinstance(doc[ARRAYS[name]], list)


def test_predict_victim_same_keys_for_both_policies(host: FakeHost) -> None:
    keys = []
    for policy in ("priority", "kernel"):
        r = CliRunner().invoke(
            cli, ["predict-victim", "--policy", policy, "--json"], env=host.cli_env()
        )
        assert r.exit_code == 0, r.output
        keys.append(set(json.loads(r.stdout)))
    assert keys[0] == keys[1]


def test_json_lines_is_one_object_per_line(host: FakeHost) -> None:
    (host.base / "kmsg").write_text(
        "3,1,1000,-;Memory cgroup out of memory: Killed process 200 (worker) "
        "total-vm:1000kB, anon-rss:900kB, file-rss:0kB, shmem-rss:0kB, UID:0 "
        "pgtables:8kB oom_score_adj:0\n"
    )
    r = CliRunner().invoke(cli, ["events", "--json-lines"], env=host.cli_env())
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines and all(isinstance(json.loads(line), dict) for line in lines)
    r = CliRunner().invoke(cli, ["events", "--json"], env=host.cli_env())
    assert json.loads(r.stdout)["events"] == [json.loads(line) for line in lines]


def test_prometheus_with_json_is_a_usage_error(host: FakeHost) -> None:
    r = CliRunner().invoke(
        cli, ["counters", "--format", "prometheus", "--json"], env=host.cli_env()
    )
    assert r.exit_code == 2
    assert "not with --json" in r.stderr


def test_cgroup_entries_carry_a_pod_key_null_when_unknown(host: FakeHost) -> None:
    """``pod`` (``namespace/name``, from ``memcgctl kube``) is on every cgroup entry and
    on the processes of a decision, null on a host without pods: one grammar."""
    r = CliRunner().invoke(cli, ["tree", "--json"], env=host.cli_env())
    assert all(c["pod"] is None for c in json.loads(r.stdout)["cgroups"])
    for policy in ("priority", "kernel"):
        r = CliRunner().invoke(
            cli, ["predict-victim", "--policy", policy, "--top", "2", "--json"], env=host.cli_env()
        )
        doc = json.loads(r.stdout)
        assert doc["victim"]["pod"] is None
        assert all(c["pod"] is None for c in doc["candidates"])
        assert all(r["victim"]["pod"] is None for r in doc["runners_up"])
        for level in doc["walk"]:
            assert level["pod"] is None
            assert all(c["pod"] is None for c in level["candidates"])
