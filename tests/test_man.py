"""The man page: generated from the commands, current, and rendered without warnings."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import click

from memcgctl.cli import cli
from tools import gen_man

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "man" / "memcgctl.1"


def test_committed_man_page_is_current() -> None:
    assert PAGE.read_text() == gen_man.render(), "stale: run python3 tools/gen_man.py"


def test_every_command_has_a_section_with_its_options() -> None:
    text = gen_man.render()
    ctx = click.Context(cli, info_name="memcgctl")
    for name in cli.list_commands(ctx):
        command = cli.get_command(ctx, name)
        assert command is not None
        assert f'.SS "memcgctl {gen_man.esc(name)}"' in text
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert gen_man.esc(max(param.opts, key=len)) in text, (name, param.opts)
    for section in (
        "NAME",
        "SYNOPSIS",
        "DESCRIPTION",
        "COMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
        "SEE ALSO",
    ):
        assert f"\n.SH {section}\n" in text
    for needle in (
        "trusted.memcgctl.badness",
        "oom_delay_ms",
        "badness.json",
        "journal.jsonl",
        "MEMCGCTL_STATE_DIR",
    ):
        assert needle in text


def test_man_page_renders_without_warnings() -> None:
    man = shutil.which("man")
    assert man is not None, "man is not installed (.ci/run installs man-db and groff-base)"
    p = subprocess.run(
        [man, "--warnings", "-l", str(PAGE)],
        env={
            **os.environ,
            "MANWIDTH": "80",
            "MANPAGER": "cat",
            "PAGER": "cat",
            "LC_ALL": "C.UTF-8",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr == ""
    assert "memcgctl run [OPTIONS] -- CMD [ARG]..." in p.stdout
    assert "EXIT STATUS" in p.stdout
    width = max(len(line) for line in p.stdout.splitlines())
    assert width <= 80
