"""What a one-shot command loads (it must start fast): no snapshot dataclasses, /proc reader or
json for ``get-badness CG``; nothing of the commands for ``--version``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
