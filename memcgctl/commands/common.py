"""Options and helpers shared by the commands."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from memcgctl.env import PROC, Env
from memcgctl.vocab.cgpath import ROOT
from memcgctl.vocab.errors import UsageProblem

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., Any])

pass_env = click.make_pass_decorator(Env)


def pid_option(help_text: str = "Use the memory cgroup of PID.") -> Callable[[F], F]:
    return click.option("--pid", type=PidParam(), default=None, metavar="PID", help=help_text)


def pids_option(help_text: str) -> Callable[[F], F]:
    """``--pid PID``, repeatable, into the parameter ``pids``."""
    return click.option(
        "--pid", "pids", type=PidParam(), multiple=True, metavar="PID", help=help_text
    )


def unit_option(help_text: str = "Use the cgroup of systemd unit NAME.") -> Callable[[F], F]:
    """``--unit NAME``: from systemd when it runs, else by the slice naming convention."""
    return click.option("--unit", default=None, metavar="NAME", help=help_text)


def units_option(help_text: str) -> Callable[[F], F]:
    """``--unit NAME``, repeatable, into the parameter ``units``."""
    return click.option("--unit", "units", multiple=True, metavar="NAME", help=help_text)


def dry_run_option(func: F) -> F:
    return click.option(
        "--dry-run", "-n", is_flag=True, help="Say what would change; change nothing."
    )(func)


# click >= 8.4 makes ParamType generic (ParamType[int] etc.); before 8.4 it is not
# subscriptable, and mypy cannot tell the versions apart: hence the version-proof ignores.
class AsciiInt(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """An integer in ASCII digits (click's INT takes whatever int() does: "٣", "1_0")."""

    name = "integer"

    def __init__(self, minimum: int | None = None) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        from memcgctl.vocab.units import parse_int_ascii

        text = str(value)
        negative = text.strip().startswith("-")
        try:
            number = (
                -parse_int_ascii(text.strip()[1:], "it")
                if negative
                else parse_int_ascii(text, "it")
            )
        except UsageProblem:
            self.fail(f"{text!r} is not a whole number (digits 0-9)", param, ctx)
        if self.minimum is not None and number < self.minimum:
            self.fail(f"{number} is smaller than {self.minimum}", param, ctx)
        return number


class PidParam(AsciiInt):
    """A pid: an :class:`AsciiInt`, completed in the shell from the processes running
    (kernel threads left out), each with its command name as the description."""

    name = "pid"

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        from click.shell_completion import CompletionItem

        try:
            return [CompletionItem(str(p), help=c) for p, c in complete_pid(ctx, incomplete)]
        except Exception:  # completion must never fail: no candidates instead
            return []


def complete_pid(ctx: click.Context, incomplete: str) -> list[tuple[int, str]]:
    import os

    proc = str(ctx.find_root().params.get("proc_root") or PROC)
    out: list[tuple[int, str]] = []
    for name in os.listdir(proc):
        if not (name.isascii() and name.isdigit() and name.startswith(incomplete)):
            continue
        try:
            with open(f"{proc}/{name}/cmdline", "rb") as f:
                if not f.read(1):
                    continue  # a kernel thread (or a zombie): nothing to name
            with open(f"{proc}/{name}/comm", "rb") as f:
                comm = f.read().decode(errors="replace").strip()
        except OSError:
            continue
        out.append((int(name), comm))
    return sorted(out)


def complete_signal(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Signal names as ``kill -l`` spells them without SIG (KILL, TERM, …)."""
    import signal

    names = sorted(
        {s.name[3:] for s in signal.Signals if s.name.startswith("SIG") and "_" not in s.name}
    )
    return [n for n in names if n.startswith(incomplete.upper())]


class Seconds(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A finite, non-negative number of seconds in ASCII digits ("nan", "inf", "-1" and
    "1e9" are usage errors, where click's FLOAT accepts the first two)."""

    name = "seconds"

    def __init__(self, unit: bool = False, off: bool = False) -> None:
        """``unit``: a duration with its unit instead (``500ms``, ``2s``, ``1.5m``, ``0``;
        a bare number other than 0 is refused: ms or s?), as ``set-delay`` takes it;
        ``off``: the word ``off`` too, which becomes None."""
        self.unit, self.off = unit, off
        if unit:
            self.name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float | None:
        if isinstance(value, float):
            return value
        from memcgctl.vocab.units import parse_delay, parse_duration_ms, parse_seconds

        try:
            if self.unit and self.off:
                ms = parse_delay(str(value))
                return None if ms is None else ms / 1000
            if self.unit:
                return parse_duration_ms(str(value)) / 1000
            return parse_seconds(str(value), param.name if param and param.name else "seconds")
        except UsageProblem as exc:
            self.fail(exc.message, param, ctx)


class Share(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    """A share: ``10%`` or ``0.1`` → 0.1 (ASCII digits; whether it is in range is for
    whoever uses it to say)."""

    name = "share"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        import re

        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(%?)\s*", str(value), re.ASCII)
        if m is None:
            self.fail(f"{value!r}: a share such as 10% or 0.1", param, ctx)
        number = float(m.group(1))
        return number / 100 if m.group(2) else number


class CgroupName(click.ParamType):  # type: ignore[type-arg,unused-ignore]
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
    base = fs.resolve(head) if head else ROOT
    prefix = "" if not head else (head if head.endswith("/") else head + "/")
    names = sorted(c.name for c in fs.children(base) if c.name.startswith(partial))
    return [prefix + n for n in names]


def output_options(func: F) -> F:
    """Add ``--json`` and ``--plain``; the command receives ``out: Output``."""

    @click.option("--plain", is_flag=True, help="Plain-text table even on a terminal.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, plain: bool, **kwargs: Any) -> Any:
        # imported here: the daemon, which draws nothing, keeps its ~0.5 MiB out of memory
        from memcgctl.render.output import Output

        return func(*args, out=Output(json=as_json, plain=plain), **kwargs)

    return wrapper  # type: ignore[return-value]
