"""Options and helpers shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from memcgctl.env import Env

F = TypeVar("F", bound=Callable[..., Any])

pass_env = click.make_pass_decorator(Env)


def pid_option(help_text: str = "Use the memory cgroup of PID.") -> Callable[[F], F]:
    return click.option("--pid", type=int, default=None, metavar="PID", help=help_text)


def dry_run_option(func: F) -> F:
    return click.option(
        "--dry-run", "-n", is_flag=True, help="Say what would change; change nothing."
    )(func)
