"""What a one-shot command loads (it must start fast): no snapshot dataclasses, /proc reader or
json for ``get-badness CG``; nothing of the commands for ``--version``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent


def modules_after(argv: list[str], env: dict[str, str], tmp: Path) -> set[str]:
    out = tmp / "modules.txt"
    code = (
        "import sys, atexit\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write(' '.join(sorted(sys.modules))))\n"
        "from memcgctl.cli import main\n"
        f"sys.exit(main({argv!r}))\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    return set(out.read_text().split())


def test_get_badness_of_a_cgroup_loads_little(fake_v1: FakeHost, tmp_path: Path) -> None:
    fake_v1.cgroup("/batch", badness=100)
    mods = modules_after(["get-badness", "/batch"], fake_v1.cli_env(), tmp_path)
    assert "memcgctl.commands.badness" in mods
    for heavy in (
        "memcgctl.vocab.model",
        "memcgctl.snapshot",
        "memcgctl.kernel.procfs",
        "json",
        "dataclasses",  # render.output's Field is a plain class
        "rich",
        "tabulate",
        "psutil",
    ):
        assert heavy not in mods, heavy


def test_get_badness_json_still_works(fake_v1: FakeHost) -> None:
    fake_v1.cgroup("/batch", badness=100)
    p = subprocess.run(
        [sys.executable, "-m", "memcgctl", "get-badness", "/batch", "--json"],
        cwd=ROOT,
        env={**os.environ, **fake_v1.cli_env()},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(p.stdout) == {
        "cgroups": [{"cgroup": "/batch", "badness": 100, "badness_source": "trusted"}],
        "processes": [],
    }


def test_version_loads_no_command(fake_v1: FakeHost, tmp_path: Path) -> None:
    mods = modules_after(["--version"], fake_v1.cli_env(), tmp_path)
    assert not [m for m in mods if m.startswith("memcgctl.commands")]
    assert "memcgctl.env" not in mods


# What ``counters --json`` loads once its running totals exist (every run but the first
# after a boot), with nothing new in the kernel log: exactly these modules of ours, and
# of the rest only json (its output and counters.json) beyond what click loads.  The
# kernel-log parser (logic.oomassembler and the follower) is loaded only when the ring
# holds records after the cursor, the record types only when the journal is parsed, the
# table's field list only for the table.  A module added here costs every run: make it
# lazy where it can be (bench/startup_bench.py; SPEC §8: at most 1.25x import click).
COUNTERS_MODULES = {
    "memcgctl",
    "memcgctl.cli",
    "memcgctl.commands",
    "memcgctl.commands.common",
    "memcgctl.commands.counters",
    "memcgctl.commands.examples",
    "memcgctl.env",
    "memcgctl.kernel",
    "memcgctl.kernel.cgroupfiles",
    "memcgctl.kernel.cgroupfs",
    "memcgctl.kernel.cgrouptree",
    "memcgctl.kernel.fileio",
    "memcgctl.kernel.hierarchy",
    "memcgctl.kernel.kmsgdev",
    "memcgctl.kernel.procfs",
    "memcgctl.logic",
    "memcgctl.logic.counters",
    "memcgctl.render",
    "memcgctl.render.diag",
    "memcgctl.render.output",
    "memcgctl.render.safetext",
    "memcgctl.state",
    "memcgctl.state.journal",
    "memcgctl.state.journallines",
    "memcgctl.state.retention",
    "memcgctl.state.statedir",
    "memcgctl.state.store",
    "memcgctl.state.totals",
    "memcgctl.vocab",
    "memcgctl.vocab.cgpath",
    "memcgctl.vocab.constants",
    "memcgctl.vocab.errors",
    "memcgctl.vocab.podname",
    "memcgctl.vocab.structs",  # state.store's NamedTuple (typing's at run time: the daemon's)
    "memcgctl.vocab.units",
    "memcgctl.watch",
    "memcgctl.watch.history",
    "memcgctl.watch.tally",
}
# beyond `import click`: json for the output and the totals file; locale is loaded by
# click's gettext when the options are declared; gc is built in (cli.main freezes)
COUNTERS_OTHERS = {
    "gc",
    "json",
    "json.decoder",
    "json.encoder",
    "json.scanner",
    "_json",
    "locale",
    "_locale",
}


def click_modules(tmp: Path) -> set[str]:
    out = tmp / "click-modules.txt"
    code = (
        "import sys, atexit\n"
        f"atexit.register(lambda: open({str(out)!r}, 'w').write(' '.join(sorted(sys.modules))))\n"
        "import click\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return set(out.read_text().split())


@pytest.mark.parametrize("version", [1, 2])
def test_counters_loads_exactly_its_modules(tmp_path: Path, version: int) -> None:
    host = FakeHost(tmp_path / "host", version=version)
    host.cgroup("/batch", limit=256 << 20)
    host.process(1, "/", comm="init")
    (host.base / "kmsg").write_text("")
    env = host.cli_env()
    modules_after(["counters", "--json"], env, tmp_path)  # the first: builds the totals
    mods = modules_after(["counters", "--json"], env, tmp_path)
    ours = {m for m in mods if m == "memcgctl" or m.startswith("memcgctl.")}
    assert ours == COUNTERS_MODULES, (
        f"loaded besides: {sorted(ours - COUNTERS_MODULES)}; "
        f"no longer loaded: {sorted(COUNTERS_MODULES - ours)}"
    )
    others = mods - ours - click_modules(tmp_path)
    assert others <= COUNTERS_OTHERS, sorted(others - COUNTERS_OTHERS)
    # and it counted: the cgroups are there (the path above is the one that works)
    p = subprocess.run(
        [sys.executable, "-m", "memcgctl", "counters", "--json"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert [c["cgroup"] for c in json.loads(p.stdout)["cgroups"]] == ["/", "/batch"]


def test_counters_loads_the_log_parser_when_the_ring_has_new_kills(
    fake_v1: FakeHost, tmp_path: Path
) -> None:
    """The lazy path is taken: a kill after the cursor is parsed, journaled, counted."""
    fake_v1.cgroup("/a", oom_kill=1)
    (fake_v1.base / "kmsg").write_text("")
    env = fake_v1.cli_env()
    modules_after(["counters", "--json"], env, tmp_path)
    (fake_v1.base / "kmsg").write_text(
        "4,7,7000,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
        "mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=grow,pid=100,uid=0\n"
        "3,8,7001,-;Memory cgroup out of memory: Killed process 100 (grow) total-vm:1kB, "
        "anon-rss:32000kB, file-rss:10kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0\n"
    )
    mods = modules_after(["counters", "/a", "--json"], env, tmp_path)
    assert {"memcgctl.logic.oomassembler", "memcgctl.watch.follower"} <= mods
    p = subprocess.run(
        [sys.executable, "-m", "memcgctl", "counters", "/a", "--json"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(p.stdout)["cgroups"][0]["by_cause"] == {"system": 0, "memcg": 1, "user": 0}
