"""The man page: generated from the commands, current, and rendered without warnings."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from memcgctl.cli import cli
from tools import gen_man

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "man" / "memcgctl.1"


def test_committed_man_page_is_current() -> None:
    assert PAGE.read_text() == gen_man.render(), "stale: run python3 tools/gen_man.py"


def test_the_page_does_not_use_clicks_help_formatter(monkeypatch: pytest.MonkeyPatch) -> None:
    """click's help records and usage pieces change layout between releases (8.5 added
    positional arguments to them); the page is built from the parameters themselves, so
    it is the same under every click that pyproject.toml allows."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("gen_man must not depend on click's help layout")

    for cls, name in (
        (click.Parameter, "get_help_record"),
        (click.Option, "get_help_record"),
        (click.Argument, "get_help_record"),
        (click.Parameter, "make_metavar"),
        (click.Command, "collect_usage_pieces"),
        (click.Command, "format_help"),
    ):
        monkeypatch.setattr(cls, name, forbidden)
    assert PAGE.read_text() == gen_man.render()


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
