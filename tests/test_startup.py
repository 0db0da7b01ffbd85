"""The import path stays short: no rich/tabulate/psutil unless a table is drawn."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("rich", "tabulate", "psutil")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_importing_the_cli_imports_no_table_library() -> None:
    mods = _modules_after("import memcgctl.cli")
    assert not [m for m in mods if m.split(".")[0] in HEAVY]


def test_one_shot_command_imports_only_its_module() -> None:
    code = (
        "import sys\nfrom memcgctl.cli import cli\n"
        "try:\n    cli.main(['get-badness', '--help'], standalone_mode=False)\nexcept SystemExit:\n    pass"
    )
    mods = _modules_after(code)
    assert "memcgctl.commands.badness" in mods
    assert "memcgctl.commands.inspect" not in mods
    assert not [m for m in mods if m.split(".")[0] in HEAVY]
