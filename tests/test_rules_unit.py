"""Badness rules and inherited process badness, on fixture trees: the rule format and
its errors, the hardening of the rules directory, and the precedence
own > rule > inherited > oom_score_adj > default."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.logic.rules import BadRules, glob_regex, unit_of
from memcgctl.state.rules import load_rules
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import PermissionDenied
from tests.fakehost import FakeHost

TICKS = os.sysconf("SC_CLK_TCK")


def rules_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    d = tmp_path / "rules.d"
    d.mkdir(mode=0o755, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


def test_glob_stays_in_one_component_unless_doubled() -> None:
    g = glob_regex("/batch.slice/job-*")
    assert g.match("/batch.slice/job-1") and not g.match("/batch.slice/job-1/sub")
    assert glob_regex("/batch.slice/**").match("/batch.slice/a/b")
    assert glob_regex("/x/[!a]?").match("/x/bc") and not glob_regex("/x/[!a]?").match("/x/ac")
    assert unit_of(CgroupPath("/system.slice/nightly-1.service")) == "nightly-1.service"
    assert unit_of(CgroupPath("/batch/job1")) is None


def test_the_issue_example_loads(tmp_path: Path) -> None:
    d = rules_dir(
        tmp_path,
        {
            "10-batch.toml": """
# /etc/memcgctl/rules.d/10-batch.toml
[[rule]]
name = "batch-workers"
comm = "^make$|^cc1"
badness = 20

[[rule]]
name = "nightly-jobs"
cgroup = "/batch.slice/job-*"
unit = "nightly-*.service"
badness = 123
oom_delay = "2s"
""",
        },
    )
    rs = load_rules(d)
    assert [(r.name, r.line, r.for_processes) for r in rs.rules] == [
        ("batch-workers", 3, True),
        ("nightly-jobs", 8, False),
    ]
    assert rs.rules[1].oom_delay_ms == 2000 and rs.rules[1].badness == 123


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rule]]\nname = 'a'\nbadness = \n", "x.toml:3: not valid TOML"),
        (
            "[[rule]]\ncomm = 'a'\nbadness = 20\n\n[[rule]]\nname='b'\ncomm='('\nbadness=1\n",
            "x.toml:5: rule 'b': comm '(' is not a regular expression",
        ),
        ("[[rule]]\ncomm = 'a'\nbadness = 2000\n", "x.toml:1: rule 'x.toml#1': badness must be"),
        ("[[rule]]\ncomm = 'a'\nbadnes = 20\n", "x.toml:1: unknown key 'badnes'"),
        ("[[rule]]\ncomm = 'a'\nbadness = 20\noom_delay='1s'\n", "oom_delay is a cgroup setting"),
        ("[[rule]]\ncgroup = '/a'\noom_delay = 'soon'\n", "oom_delay: 'soon'"),
        ("[[rule]]\nbadness = 3\n", "matches nothing"),
        ("[[rule]]\nuser = 'no-such-user-xyz'\nbadness = 3\n", "no such user"),
        ("[rules]\nx=1\n", "unknown table or key 'rules'"),
    ],
)
def test_a_bad_rule_file_is_one_error_naming_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    d = rules_dir(tmp_path, {"x.toml": text})
    with pytest.raises(BadRules) as err:
        load_rules(d)
    assert message in err.value.message and str(d / "x.toml") in err.value.message


def test_bad_rules_exit_2_with_one_line(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "h")
    d = rules_dir(tmp_path, {"50-x.toml": "[[rule]]\ncomm = 'a'\nbadness = -1\n"})
    r = CliRunner().invoke(cli, ["--rules", str(d), "ps", "--json"], env=host.cli_env())
    assert r.exit_code == 2
    assert r.stderr.strip().count("\n") == 0 and "50-x.toml:1" in r.stderr
    assert "Traceback" not in r.stderr


def test_rules_must_be_roots_and_not_writable_by_others(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown the rules to another user")
    d = rules_dir(tmp_path, {"a.toml": "[[rule]]\ncomm='x'\nbadness=1\n"})
    load_rules(d)  # root's, 0755 / 0644: fine
    os.chmod(d, 0o777)
    with pytest.raises(PermissionDenied, match="writable by other users"):
        load_rules(d)
    os.chmod(d, 0o755)
    os.chown(d / "a.toml", 65534, 65534)
    with pytest.raises(PermissionDenied, match=r"a\.toml: refusing the rules: owned by uid 65534"):
        load_rules(d)
    os.chown(d / "a.toml", 0, 0)
    os.chmod(d / "a.toml", 0o666)
    with pytest.raises(PermissionDenied, match="writable by other users"):
        load_rules(d)
    os.chmod(d / "a.toml", 0o644)
    (d / "b.toml").symlink_to(d / "a.toml")
    with pytest.raises(BadRules, match=r"b\.toml: a symbolic link"):
        load_rules(d)


def test_no_rules_directory_means_no_rules(tmp_path: Path) -> None:
    assert load_rules(tmp_path / "absent").rules == ()


# -- precedence and inheritance, on a fixture host ---------------------------------------


def family(tmp_path: Path) -> FakeHost:
    """init(1) → parent 100 (set at tick 5000) → child 101 (born 6000) → grandchild 102;
    101's sibling 103 was born before the parent's entry was set."""
    host = FakeHost(tmp_path / "h")
    host.cgroup("/job", limit=1 << 30)
    host.process(100, "/job", comm="driver", start_time=1000)
    host.process(101, "/job", comm="worker", ppid=100, start_time=6000)
    host.process(102, "/job", comm="cc1", ppid=101, start_time=7000)
    host.process(103, "/job", comm="early", ppid=100, start_time=2000)
    host.process(104, "/job", comm="shielded", ppid=100, start_time=8000, oom_score_adj=-1000)
    host.process(200, "/job", comm="loner", start_time=3000)
    (host.proc / "uptime").write_text(f"{5000 / TICKS:.2f} 0.00\n")
    return host


def sources(host: FakeHost, rules: Path | None = None) -> dict[int, tuple[int, str, object]]:
    args = ["--rules", str(rules)] if rules is not None else []
    r = CliRunner().invoke(cli, [*args, "ps", "--json"], env=host.cli_env())
    assert r.exit_code == 0, r.output
    return {
        p["pid"]: (p["badness"], p["badness_source"], p["badness_from"])
        for p in json.loads(r.stdout)["processes"]
    }


def set_pid(host: FakeHost, pid: int, value: str) -> None:
    r = CliRunner().invoke(cli, ["set-badness", "--pid", str(pid), value], env=host.cli_env())
    assert r.exit_code == 0, r.output


def test_children_forked_after_the_setting_inherit_it(tmp_path: Path) -> None:
    host = family(tmp_path)
    set_pid(host, 100, "900")
    got = sources(host)
    assert got[100] == (900, "process", None)
    assert got[101] == (900, "inherited", 100)
    assert got[102] == (900, "inherited", 100)  # through 101, which has no entry
    assert got[103] == (500, "default", None)  # forked before the entry was set
    assert got[104] == (900, "inherited", 100)  # inherited beats oom_score_adj
    assert got[200] == (500, "default", None)


def test_the_nearest_registered_ancestor_wins_and_a_later_one_does_not_count(
    tmp_path: Path,
) -> None:
    host = family(tmp_path)
    set_pid(host, 100, "900")
    (host.proc / "uptime").write_text(f"{6500 / TICKS:.2f} 0.00\n")
    set_pid(host, 101, "300")  # set at 6500: after 101 itself, before 102
    got = sources(host)
    assert got[102] == (300, "inherited", 101)
    (host.proc / "uptime").write_text(f"{7500 / TICKS:.2f} 0.00\n")
    set_pid(host, 101, "default")
    set_pid(host, 101, "250")  # set at 7500: 102 was born before; 100's still counts
    assert sources(host)[102] == (900, "inherited", 100)


def test_a_recycled_pid_never_passes_a_priority_on(tmp_path: Path) -> None:
    host = family(tmp_path)
    set_pid(host, 100, "900")
    # 100 exits; a new process gets pid 100 (born 9000), the registry entry is stale, and
    # the orphans' ppid now names... a process younger than them: no link
    host.remove_process(100)
    host.process(100, "/job", comm="impostor", start_time=9000)
    got = sources(host)
    assert got[101] == (500, "default", None) and got[100] == (500, "default", None)


def test_precedence_own_then_rule_then_inherited_then_default(tmp_path: Path) -> None:
    host = family(tmp_path)
    d = rules_dir(
        tmp_path,
        {
            "10-a.toml": "[[rule]]\nname='compilers'\ncomm='^cc1$'\nbadness=20\n",
            "20-b.toml": "[[rule]]\nname='loners'\ncomm='loner|worker'\nuid=0\nbadness=40\n"
            "[[rule]]\nname='never'\ncomm='loner'\nbadness=999\n",
        },
    )
    set_pid(host, 100, "900")
    set_pid(host, 101, "700")
    got = sources(host, d)
    assert got[101] == (700, "process", None)  # own beats the rule 'loners'
    assert got[102] == (20, "rule", "compilers")  # rule beats inherited
    assert got[200] == (40, "rule", "loners")  # the first matching rule wins
    assert got[103] == (500, "default", None)
    r = CliRunner().invoke(
        cli, ["--rules", str(d), "get-badness", "--pid", "102"], env=host.cli_env()
    )
    assert r.exit_code == 0 and "rule compilers" in r.stdout


def test_process_rules_by_cgroup_exe_and_cmdline(tmp_path: Path) -> None:
    host = family(tmp_path)
    host.cgroup("/batch.slice/job-7", limit=1 << 30)
    host.process(300, "/batch.slice/job-7", comm="python3")
    (host.proc / "300/cmdline").write_bytes(b"python3\0train.py\0--fast\0")
    d = rules_dir(
        tmp_path,
        {
            "a.toml": "[[rule]]\nname='train'\ncmdline='train\\.py --fast'\n"
            "cgroup='/batch.slice/*'\nbadness=11\n"
            "[[rule]]\nname='exe'\nexe='^/nonexistent$'\nbadness=12\n",
        },
    )
    got = sources(host, d)
    assert got[300] == (11, "rule", "train")
    assert got[200] == (500, "default", None)  # no cmdline file: the rule does not match


def test_explain_names_the_source(tmp_path: Path) -> None:
    host = family(tmp_path)
    set_pid(host, 100, "900")
    r = CliRunner().invoke(cli, ["predict-victim", "/job", "--explain"], env=host.cli_env())
    assert r.exit_code == 0, r.output
    assert "badness 900 (inherited from 100)" in r.stdout
    r = CliRunner().invoke(cli, ["predict-victim", "/job", "--json"], env=host.cli_env())
    doc = json.loads(r.stdout)
    cands = {c["pid"]: c for c in doc["walk"][0]["candidates"] if c["kind"] == "process"}
    assert (cands[101]["badness_source"], cands[101]["badness_from"]) == ("inherited", 100)


def test_without_children_files_every_process_walks_its_chain_to_the_same_answer(
    tmp_path: Path,
) -> None:
    """/proc/PID/task/TID/children (CONFIG_PROC_CHILDREN) only narrows who walks."""
    import shutil

    host = family(tmp_path)
    set_pid(host, 100, "900")
    with_files = sources(host)
    for pid in host.processes:
        shutil.rmtree(host.proc / str(pid) / "task")
    assert sources(host) == with_files
    assert with_files[102] == (900, "inherited", 100)
