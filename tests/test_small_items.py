"""The small items of issue 15 point 6, on fixture trees."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner, Result

from memcgctl.cli import cli
from memcgctl.vocab.units import format_duration_ms
from tests.fakehost import FakeHost

MIB = 1 << 20


def run(host: FakeHost, *args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={**host.cli_env(), **env})


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    fake_v1.cgroup("/batch", limit=512 * MIB, badness=100)
    fake_v1.cgroup("/batch/job1", limit=256 * MIB)
    fake_v1.cgroup("/svc")
    fake_v1.cgroup("/empty", limit=MIB)
    fake_v1.process(1, "/", comm="init")
    fake_v1.process(2, "/", comm="kthreadd", kthread=True)
    fake_v1.process(200, "/batch/job1", comm="worker", rss_anon_kb=5000)
    return fake_v1


def test_pid_on_counters_get_delay_set_delay(host: FakeHost) -> None:
    r = run(host, "counters", "--pid", "200", "--json")
    assert r.exit_code == 0, r.output
    assert [c["cgroup"] for c in json.loads(r.stdout)["cgroups"]] == ["/batch/job1"]
    r = run(host, "set-delay", "--pid", "200", "2s")
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "/batch/job1: set OOM delay 2s (trusted), was off"
    assert os.getxattr(host.cgroot / "batch/job1", "trusted.memcgctl.oom_delay_ms") == b"2000"
    r = run(host, "get-delay", "--pid", "200", "--json")
    assert json.loads(r.stdout) == {
        "cgroups": [{"cgroup": "/batch/job1", "oom_delay_ms": 2000, "oom_delay_source": "trusted"}]
    }
    r = run(host, "set-delay", "--pid", "200")
    assert r.exit_code == 2 and "usage: memcgctl set-delay" in r.stderr


@pytest.mark.parametrize(("pid", "needle"), [("1", "init is never"), ("2", "kernel thread")])
def test_set_badness_refuses_init_and_kernel_threads(host: FakeHost, pid: str, needle: str) -> None:
    r = run(host, "set-badness", "--pid", pid, "5")
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (host.state / "badness.json").exists()


def test_long_delay_warns_on_v1_only(
    host: FakeHost, tmp_path_factory: pytest.TempPathFactory
) -> None:
    r = run(host, "set-delay", "/svc", "1h")
    assert r.exit_code == 0
    assert "warning" in r.stderr and "may hang" in r.stderr
    assert "set OOM delay 1h" in r.stdout
    assert run(host, "set-delay", "/svc", "30s").stderr == ""
    fake_v2 = FakeHost(tmp_path_factory.mktemp("v2"), version=2)
    fake_v2.cgroup("/svc")
    r = run(fake_v2, "set-delay", "/svc", "1h")
    assert r.exit_code == 0 and r.stderr == ""


def test_24h_displays_as_24h(host: FakeHost) -> None:
    assert format_duration_ms(86_400_000) == "24h"
    assert format_duration_ms(5_400_000) == "90m"
    r = run(host, "set-delay", "/svc", "24h")
    assert "set OOM delay 24h" in r.stdout


def test_since_off_message_does_not_suggest_off(host: FakeHost) -> None:
    r = run(host, "events", "--since", "off")
    assert r.exit_code == 2
    assert "not a duration" in r.stderr and "or off" not in r.stderr
    assert "10m" in r.stderr


def test_tree_on_cgroup2_without_memory_says_so(fake_v2: FakeHost) -> None:
    (fake_v2.cgroot / "cgroup.controllers").write_text("cpu pids\n")
    r = run(fake_v2, "tree", MEMCGCTL_CGROUP_ROOT=str(fake_v2.cgroot))
    assert r.exit_code == 5, r.output
    assert "no memory controller" in r.stderr and r.stdout == ""


def test_no_victim_on_one_stream_only(host: FakeHost) -> None:
    r = run(host, "predict-victim", "/empty")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.count("no killable victim") == 1
