"""Options and helpers shared by the commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from memcgctl.env import PROC, Env

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., Any])

pass_env = click.make_pass_decorator(Env)


def pid_option(help_text: str = "Use the memory cgroup of PID.") -> Callable[[F], F]:
    return click.option("--pid", type=int, default=None, metavar="PID", help=help_text)


def dry_run_option(func: F) -> F:
    return click.option(
        "--dry-run", "-n", is_flag=True, help="Say what would change; change nothing."
    )(func)


if TYPE_CHECKING:  # click >= 8.2 makes ParamType generic; older click is not subscriptable
    _StrParamType = click.ParamType[str]
else:
    _StrParamType = click.ParamType


class CgroupName(_StrParamType):
    """A cgroup argument: a plain string for the command (which validates it with
    ``env.fs.resolve``), completed from the live hierarchy in the shell."""

    name = "cgroup"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        try:
            return [CompletionItem(c) for c in complete_cgroup(ctx, incomplete)]
        except Exception:  # completion must never fail: no candidates instead
            return []


def complete_cgroup(ctx: click.Context, incomplete: str) -> list[str]:
    """Cgroups whose name starts with ``incomplete``, written the way it was begun
    (``/batch/j``, ``batch/j``, or an absolute path under the mount)."""
    root = ctx.find_root()
    params = root.params
    env = Env(cgroup_root=params.get("cgroup_root"), proc_root=params.get("proc_root") or PROC)
    fs = env.fs
    head, _, partial = incomplete.rpartition("/")
    if not head and incomplete.startswith("/"):
        head = "/"
    base = fs.resolve(head) if head else "/"
    prefix = "" if not head else (head if head.endswith("/") else head + "/")
    names = sorted(
        c.rsplit("/", 1)[1] for c in fs.children(base) if c.rsplit("/", 1)[1].startswith(partial)
    )
    return [prefix + n for n in names]
