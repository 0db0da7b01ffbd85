"""kill-all machinery on fixture trees with a recording signaller (nothing real is
signalled).  CLI tests here are dry-runs and refusals only: the CLI uses real pidfds,
and fixture pids are real pids on this host."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from click.testing import CliRunner

from memcgctl.actions.kill import Killer
from memcgctl.actions.killengines import MRELEASE_MIN_RSS_KB
from memcgctl.actions.killreport import FREEZE_V2, FREEZER_V1, KILL, PROCS, user_kill_records
from memcgctl.cli import cli
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.hierarchy import Hierarchy
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import NotSupported, UsageProblem
from memcgctl.vocab.signals import parse_signal
from tests.fakehost import FakeHost
from tests.fakesignal import RecordingSignaller


def _tree(host: FakeHost) -> None:
    for cg in ("/job", "/job/a", "/job/a/b", "/other"):
        host.cgroup(cg)
    host.process(201, "/job", comm="sh")
    host.process(202, "/job/a", comm="sleep")
    host.process(203, "/job/a", comm="sleep")
    host.process(204, "/job/a/b", comm="worker")
    host.process(300, "/other", comm="bystander")


def _killer(host: FakeHost, sig: RecordingSignaller, self_pid: int = 999_999) -> Killer:
    env = host.env()
    return Killer(env.fs, env.proc, sig, self_pid=self_pid)


def test_rounds_kill_whole_subtree_and_spare_bystander(fake_v1: FakeHost) -> None:
    _tree(fake_v1)
    rec = RecordingSignaller(fake_v1)
    report = _killer(fake_v1, rec).kill_all(CgroupPath("/job"), timeout=5)
    assert sorted(rec.signalled()) == [201, 202, 203, 204]
    assert all(s == signal.SIGKILL for _, s in rec.sent)
    assert report.mechanism == PROCS and report.empty
    assert {k.pid: k.cgroup for k in report.killed} == {
        201: "/job",
        202: "/job/a",
        203: "/job/a",
        204: "/job/a/b",
    }
    assert 300 in fake_v1.processes


def test_big_sigkilled_processes_still_alive_get_mrelease(fake_v1: FakeHost) -> None:
    _tree(fake_v1)
    for pid, cg in ((202, "/job/a"), (204, "/job/a/b")):
        fake_v1.process(pid, cg, comm="big", rss_anon_kb=MRELEASE_MIN_RSS_KB)
    rec = RecordingSignaller(fake_v1, lethal=frozenset())  # they take their time dying
    report = _killer(fake_v1, rec).kill_all(CgroupPath("/job"), timeout=0.05)
    # process_mrelease after SIGKILL, for the big ones only (small ones free themselves)
    assert sorted(rec.released) == [202, 204]
    assert sorted(p for p, _ in rec.sent) == [201, 202, 203, 204]  # signalled once each
    assert sorted(s.pid for s in report.survivors) == [201, 202, 203, 204]


def test_children_forked_between_rounds_are_caught(fake_v1: FakeHost) -> None:
    _tree(fake_v1)
    forked: list[int] = []

    def fork_on_signal(pid: int, sig: int) -> None:
        # the shell forks a child just as it is signalled, twice
        if pid in (201, 210) and len(forked) < 2:
            child = 210 + len(forked)
            forked.append(child)
            fake_v1.process(child, "/job/a/b", comm="child")

    rec = RecordingSignaller(fake_v1, on_send=fork_on_signal)
    report = _killer(fake_v1, rec).kill_all(CgroupPath("/job"), timeout=5)
    assert forked == [210, 211]
    assert {210, 211} <= set(rec.signalled())
    assert report.empty and not fake_v1.path("/job").joinpath("a/b/cgroup.procs").read_text()


def test_pid_that_left_the_subtree_is_not_signalled(fake_v1: FakeHost) -> None:
    _tree(fake_v1)

    def move(pid: int) -> None:
        if pid == 203:  # between listing and the pidfd: moved to a sibling cgroup
            fake_v1.process(203, "/other", comm="sleep", start_time=1203)

    rec = RecordingSignaller(fake_v1, on_open=move)
    report = _killer(fake_v1, rec).kill_all(CgroupPath("/job"), timeout=5)
    assert 203 not in rec.signalled()
    assert 203 in fake_v1.processes
    assert any(pid == 203 and "left the subtree" in why for pid, why in report.skipped)
    assert report.empty  # it is no longer in the subtree


def test_recycled_pid_is_not_signalled(fake_v1: FakeHost) -> None:
    _tree(fake_v1)

    def recycle(pid: int) -> None:
        if pid == 202:  # the sleeper exits; an unrelated process elsewhere gets its pid
            fake_v1.remove_process(202)
            fake_v1.process(202, "/other", comm="innocent", start_time=99_999)

    rec = RecordingSignaller(fake_v1, on_open=recycle)
    _killer(fake_v1, rec).kill_all(CgroupPath("/job"), timeout=5)
    assert 202 not in rec.signalled()
    assert fake_v1.processes[202].comm == "innocent"


def test_kill_process_checks_cgroup_and_start_time(fake_v1: FakeHost) -> None:
    _tree(fake_v1)
    rec = RecordingSignaller(fake_v1)
    killer = _killer(fake_v1, rec)
    assert not killer.kill_process(202, CgroupPath("/other"))
    assert not killer.kill_process(204, CgroupPath("/job/a"), exact=True)
    assert not killer.kill_process(
        202, CgroupPath("/job"), start_time=12345
    )  # recycled: other start
    assert not killer.kill_process(4242, CgroupPath("/job"))  # no such process
    assert rec.sent == []
    assert killer.kill_process(204, CgroupPath("/job/a"))
    assert killer.kill_process(202, CgroupPath("/job/a"), start_time=1202, exact=True)
    assert rec.sent == [(204, signal.SIGKILL), (202, signal.SIGKILL)]
    with pytest.raises(UsageProblem):
        killer.kill_process(1, CgroupPath("/"))


def test_timeout_names_survivors(fake_v1: FakeHost) -> None:
    _tree(fake_v1)
    rec = RecordingSignaller(fake_v1, lethal=frozenset({signal.SIGKILL}))
    report = _killer(fake_v1, rec).kill_all(CgroupPath("/job"), sig=signal.SIGTERM, timeout=0.05)
    assert not report.empty
    assert sorted(s.pid for s in report.survivors) == [201, 202, 203, 204]
    assert report.killed == []
    # each survivor got TERM exactly once (no re-signalling storm), plus a SIGCONT
    terms = [p for p, s in rec.sent if s == signal.SIGTERM]
    assert sorted(terms) == [201, 202, 203, 204]
    assert sorted(p for p, s in rec.sent if s == signal.SIGCONT) == [201, 202, 203, 204]


def test_grace_escalates_to_sigkill(fake_v1: FakeHost) -> None:
    _tree(fake_v1)
    # 203 ignores TERM; the rest die of it
    rec = RecordingSignaller(fake_v1, immortal=frozenset({203}), lethal=frozenset({15, 9}))
    rec.immortal = frozenset({203})

    def die_on_kill(pid: int, sig: int) -> None:
        if pid == 203 and sig == signal.SIGKILL:
            fake_v1.remove_process(203)

    rec.on_send = die_on_kill
    report = _killer(fake_v1, rec).kill_all(
        CgroupPath("/job"), sig=signal.SIGTERM, grace=0.05, timeout=5
    )
    assert report.empty
    assert report.phases == [(signal.SIGTERM, PROCS), (signal.SIGKILL, PROCS)]
    assert (203, signal.SIGKILL) in rec.sent
    assert (201, signal.SIGKILL) not in rec.sent
    by_pid = {k.pid: k.signal for k in report.killed}
    assert by_pid[203] == signal.SIGKILL and by_pid[201] == signal.SIGTERM


def test_refusals(fake_v1: FakeHost) -> None:
    _tree(fake_v1)
    rec = RecordingSignaller(fake_v1)
    with pytest.raises(UsageProblem, match="root"):
        _killer(fake_v1, rec).kill_all(CgroupPath("/"))
    fake_v1.process(1, "/job/a", comm="init")
    with pytest.raises(UsageProblem, match="pid 1"):
        _killer(fake_v1, rec).kill_all(CgroupPath("/job"))
    fake_v1.remove_process(1)
    with pytest.raises(UsageProblem, match="memcgctl itself"):
        _killer(fake_v1, rec, self_pid=204).kill_all(CgroupPath("/job"))
    assert rec.sent == []


def test_mechanism_choice_v2(fake_v2: FakeHost) -> None:
    fake_v2.cgroup("/job")
    killer = _killer(fake_v2, RecordingSignaller(fake_v2))
    assert killer.choose(CgroupPath("/job"), signal.SIGKILL) == PROCS  # no cgroup.kill/freeze files
    (fake_v2.path("/job") / "cgroup.freeze").write_text("0\n")
    assert killer.choose(CgroupPath("/job"), signal.SIGKILL) == FREEZE_V2
    (fake_v2.path("/job") / "cgroup.kill").write_text("")
    assert killer.choose(CgroupPath("/job"), signal.SIGKILL) == KILL
    assert killer.choose(CgroupPath("/job"), signal.SIGTERM) == FREEZE_V2
    assert killer.choose(CgroupPath("/job"), signal.SIGKILL, "freeze") == FREEZE_V2
    assert killer.choose(CgroupPath("/job"), signal.SIGKILL, "procs") == PROCS
    with pytest.raises(NotSupported):
        killer.choose(CgroupPath("/job"), signal.SIGTERM, "kill")


def _mirror_freezer(tmp_path: Path) -> Path:
    """A v1 freezer tree holding exactly the processes of _tree's /job subtree."""
    fz_root = tmp_path / "freezer"
    for rel, pids in (("", ""), ("job", "201\n"), ("job/a", "202\n203\n"), ("job/a/b", "204\n")):
        d = fz_root / rel
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").write_text(pids)
        (d / "freezer.state").write_text("THAWED\n")
    return fz_root


def test_v1_freezer_used_only_with_the_same_processes(fake_v1: FakeHost, tmp_path: Path) -> None:
    _tree(fake_v1)
    fz_root = _mirror_freezer(tmp_path)
    env = fake_v1.env()
    freezer = CgroupFs(Hierarchy(fz_root, 1, False))
    killer = Killer(env.fs, env.proc, RecordingSignaller(fake_v1), freezer=freezer, self_pid=1)
    assert killer.choose(CgroupPath("/job"), signal.SIGKILL) == FREEZER_V1
    (fz_root / "job/a/b/cgroup.procs").write_text("204\n777\n")  # one more than the memcg
    assert killer.choose(CgroupPath("/job"), signal.SIGKILL) == PROCS
    (fz_root / "job/a/b/cgroup.procs").write_text("")  # one fewer
    assert killer.choose(CgroupPath("/job"), signal.SIGKILL) == PROCS
    with pytest.raises(NotSupported):
        killer.choose(CgroupPath("/job"), signal.SIGKILL, "freeze")


def test_user_kill_records(fake_v1: FakeHost) -> None:
    _tree(fake_v1)
    report = _killer(fake_v1, RecordingSignaller(fake_v1)).kill_all(CgroupPath("/job/a"), timeout=5)
    recs = user_kill_records(report)
    assert sorted(r["pid"] for r in recs) == [202, 203, 204]
    r = recs[0]
    assert r["kind"] == "user_kill" and r["source"] == "journal" and r["by"] == "kill-all"
    assert r["mechanism"] == PROCS and r["target"] == "/job/a"
    assert str(r["time"]).endswith("Z") and r["comm"] and str(r["cgroup"]).startswith("/job/a")


@pytest.mark.parametrize(
    ("text", "sig"), [("KILL", 9), ("sigterm", 15), ("9", 9), ("INT", 2), ("HUP", 1)]
)
def test_parse_signal(text: str, sig: int) -> None:
    assert parse_signal(text) == sig


@pytest.mark.parametrize("text", ["NOPE", "999", ""])
def test_parse_signal_rejects(text: str) -> None:
    with pytest.raises(UsageProblem):
        parse_signal(text)


# -- CLI: dry-runs and refusals only -------------------------------------------------------


def _cli_env(host: FakeHost) -> dict[str, str]:
    env = host.cli_env()
    env["MEMCGCTL_CGROUP_ROOT"] = str(host.cgroot)
    return env


def test_cli_refuses_root_on_fixture_tree(fake_v1: FakeHost, runner: CliRunner) -> None:
    _tree(fake_v1)
    extras: tuple[list[str], ...] = ([], ["--dry-run"])
    for extra in extras:
        r = runner.invoke(cli, ["kill-all", "/", *extra], env=_cli_env(fake_v1))
        assert r.exit_code == 2, r.output
        assert "refusing to kill the whole hierarchy" in r.output


def test_cli_missing_cgroup_exits_3(fake_v1: FakeHost, runner: CliRunner) -> None:
    _tree(fake_v1)
    r = runner.invoke(cli, ["kill-all", "/nope"], env=_cli_env(fake_v1))
    assert r.exit_code == 3
    assert "/nope: no such cgroup" in r.output


def test_cli_needs_a_target(fake_v1: FakeHost, runner: CliRunner) -> None:
    r = runner.invoke(cli, ["kill-all"], env=_cli_env(fake_v1))
    assert r.exit_code == 2


def test_cli_refuses_when_memcgctl_is_inside(fake_v1: FakeHost, runner: CliRunner) -> None:
    _tree(fake_v1)
    fake_v1.process(os.getpid(), "/job/a/b", comm="memcgctl")  # CliRunner runs in-process
    r = runner.invoke(cli, ["kill-all", "/job"], env=_cli_env(fake_v1))
    assert r.exit_code == 2
    assert "memcgctl itself" in r.output


def test_cli_dry_run_lists_targets_and_mechanism(fake_v2: FakeHost, runner: CliRunner) -> None:
    _tree(fake_v2)
    (fake_v2.path("/job") / "cgroup.kill").write_text("")
    (fake_v2.path("/job") / "cgroup.freeze").write_text("0\n")
    r = runner.invoke(cli, ["kill-all", "/job", "--dry-run", "--json"], env=_cli_env(fake_v2))
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["mechanism"] == KILL and doc["dry_run"] is True
    assert sorted(t["pid"] for t in doc["would_signal"]) == [201, 202, 203, 204]
    r = runner.invoke(
        cli,
        ["kill-all", "/job", "-n", "--json", "--signal", "TERM", "--grace", "1"],
        env=_cli_env(fake_v2),
    )
    doc = json.loads(r.output)
    assert doc["phases"] == [
        {"signal": "SIGTERM", "mechanism": FREEZE_V2},
        {"signal": "SIGKILL", "mechanism": KILL},
    ]
    r = runner.invoke(cli, ["kill-all", "/job/a", "-n"], env=_cli_env(fake_v2))
    assert r.exit_code == 0
    assert "would send SIGKILL via procs to 3 process(es)" in r.output
    assert "worker" in r.output
    assert (fake_v2.path("/job") / "cgroup.freeze").read_text() == "0\n"
    assert set(fake_v2.processes) == {201, 202, 203, 204, 300}


def test_cli_bad_signal_is_usage_error(fake_v1: FakeHost, runner: CliRunner) -> None:
    _tree(fake_v1)
    r = runner.invoke(cli, ["kill-all", "/job", "-n", "--signal", "BOGUS"], env=_cli_env(fake_v1))
    assert r.exit_code == 2


def test_v1_freezer_match_tolerates_a_fork_between_the_reads(
    fake_v1: FakeHost, tmp_path: Path
) -> None:
    """A child forked between the memcg read and the freezer read shows up in the
    freezer (and in the second memcg read) only: still the same set of processes."""
    _tree(fake_v1)
    fz_root = _mirror_freezer(tmp_path)
    env = fake_v1.env()
    killer = Killer(
        env.fs,
        env.proc,
        RecordingSignaller(fake_v1),
        freezer=CgroupFs(Hierarchy(fz_root, 1, False)),
        self_pid=1,
    )
    first_read = {201, 202, 203, 204}
    (fz_root / "job/a/b/cgroup.procs").write_text("204\n205\n")  # the child, in the freezer
    (fake_v1.cgroot / "job/a/b/cgroup.procs").write_text("204\n205\n")  # and the memcg now
    assert killer.freezer_matches(CgroupPath("/job"), first_read)
    # a process the memcg held in both reads but the freezer never did: not a mirror
    (fake_v1.cgroot / "job/a/b/cgroup.procs").write_text("204\n205\n206\n")
    assert not killer.freezer_matches(CgroupPath("/job"), first_read | {206})
