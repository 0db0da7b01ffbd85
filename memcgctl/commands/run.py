"""``run``: start a command in a memcg with its badness and OOM delay, like ``choom -n``
or ``systemd-run -p``: create and join the cgroup, register the badness for this very
process (pid and start time survive exec), then exec the command."""

from __future__ import annotations

import errno
import os
import sys
from typing import TYPE_CHECKING

import click

from memcgctl.actions.launch import JobSetup, find_command, reset_signals
from memcgctl.commands.common import CgroupName, dry_run_option, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.kernel.cgroupfiles import V1_LIMIT, V2_HIGH, V2_MAX
from memcgctl.render.diag import diagnostic
from memcgctl.render.output import say
from memcgctl.state.store import NAMESPACES, default_namespace
from memcgctl.vocab.cgpath import CgroupPath

if TYPE_CHECKING:
    from memcgctl.actions.supervise import User
from memcgctl.vocab.errors import (
    CommandNotExecutable,
    CommandNotFound,
    NotSupported,
    UsageProblem,
)
from memcgctl.vocab.units import (
    format_bytes,
    format_duration_ms,
    parse_badness,
    parse_delay,
    parse_size,
)


def _limits(
    env: Env, cgroup: str | None, memory_max: str | None, memory_high: str | None, no_limit: bool
) -> list[tuple[str, int]]:
    """(file, bytes) to write before CMD starts; usage errors first."""
    if (memory_max or memory_high or no_limit) and cgroup is None:
        raise UsageProblem("--memory-max/--memory-high/--no-limit need --cgroup")
    if memory_max is not None and no_limit:
        raise UsageProblem("--memory-max and --no-limit: give one of them")
    out: list[tuple[str, int]] = []
    high = parse_size(memory_high, "--memory-high") if memory_high is not None else None
    limit = parse_size(memory_max, "--memory-max") if memory_max is not None else None
    if high is not None and env.fs.version != 2:
        raise NotSupported("--memory-high: memory.high exists on cgroup v2 only")
    if high is not None and limit is not None and high > limit:
        raise UsageProblem("--memory-high is above --memory-max: it would never act")
    if limit is not None:
        out.append((V1_LIMIT if env.fs.version == 1 else V2_MAX, limit))
    if high is not None:
        out.append((V2_HIGH, high))
    return out


@click.command(context_settings={"ignore_unknown_options": False}, epilog=epilog("run"))
@click.option(
    "--cgroup",
    "-c",
    "cgroup",
    type=CgroupName(),
    default=None,
    metavar="CG",
    help="Run in memory cgroup CG, created (with its parents) if missing.",
)
@click.option(
    "--badness",
    "-b",
    default=None,
    metavar="N",
    help="Badness of the command's process: 0-1000, lower = killed first.",
)
@click.option(
    "--delay",
    "-d",
    default=None,
    metavar="DURATION",
    help="Set CG's OOM delay (500ms, 2s, 1m, 0, off); needs --cgroup.",
)
@click.option(
    "--namespace",
    type=click.Choice(["auto", *NAMESPACES]),
    default="auto",
    show_default=True,
    help="xattr namespace for --delay: trusted (root) or user (delegated subtrees).",
)
@click.option(
    "--memory-max",
    "-m",
    "memory_max",
    default=None,
    metavar="SIZE",
    help="Set CG's memory limit (64M, 1G; v1 memory.limit_in_bytes, v2 memory.max) "
    "before CMD starts; needs --cgroup.",
)
@click.option(
    "--memory-high",
    "memory_high",
    default=None,
    metavar="SIZE",
    help="cgroup v2: set CG's memory.high (the throttling point) before CMD starts.",
)
@click.option(
    "--no-limit",
    is_flag=True,
    help="Create a new v1 memcg without --memory-max anyway (it then has no OOM of its "
    "own: only its ancestors' limits or the host's).",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Stay CMD's parent (outside CG), wait for it, then print a summary: result, "
    "exit status, runtime, CG's peak memory and OOM kills (as systemd-run --wait).",
)
@click.option(
    "--collect",
    is_flag=True,
    help="Remove the cgroups run created once CMD has exited and they are empty "
    "(implies staying CMD's parent, as --wait, without the summary).",
)
@click.option("--uid", "user", metavar="USER", default=None, help="Run CMD as USER (root only).")
@click.option(
    "--setenv",
    "-E",
    "setenv",
    multiple=True,
    metavar="NAME[=VALUE]",
    help="Set NAME in CMD's environment (NAME alone: this environment's value); repeatable.",
)
@click.option("--verbose", "-v", is_flag=True, help="Say on stderr what was done before exec.")
@dry_run_option
@click.argument("command", nargs=-1, required=True, metavar="-- CMD [ARG]...")
@pass_env
def run(
    env: Env,
    cgroup: str | None,
    badness: str | None,
    delay: str | None,
    namespace: str,
    memory_max: str | None,
    memory_high: str | None,
    no_limit: bool,
    wait: bool,
    collect: bool,
    user: str | None,
    setenv: tuple[str, ...],
    verbose: bool,
    dry_run: bool,
    command: tuple[str, ...],
) -> None:
    """Run CMD in a memory cgroup with a badness, an OOM delay and a memory limit.

    Creates CG (and missing parents) inside the hierarchy, sets its memory limit
    (--memory-max; --memory-high on v2) and OOM delay, moves
    this process into it, registers the badness for this process (pid and start time,
    which exec keeps), then replaces itself with CMD.  Without --cgroup, CMD runs in
    the current cgroup.  Exit status: CMD's own; 126 if CMD cannot be executed, 127 if
    it is not found; memcgctl's codes (1-5) when setting up failed before CMD ran.

    With --wait or --collect memcgctl stays outside CG as CMD's parent (CMD alone is
    moved in and gets the badness), passes SIGINT/SIGTERM/SIGHUP on, and exits with
    CMD's status (128 + signal when killed).
    """
    badness_value = parse_badness(badness) if badness is not None else None
    delay_ms = parse_delay(delay) if delay is not None else None
    if delay is not None and cgroup is None:
        raise UsageProblem("--delay needs --cgroup (the delay belongs to a cgroup)")
    limits = _limits(env, cgroup, memory_max, memory_high, no_limit)
    path = find_command(command[0])
    environ = _environment(setenv)
    who = None
    if user is not None:
        from memcgctl.actions.supervise import check_root_for_uid, resolve_user

        who = resolve_user(user)
        check_root_for_uid()
    if collect and cgroup is None:
        raise UsageProblem("--collect needs --cgroup (it removes the cgroup run created)")
    stay = wait or collect

    plan: list[str] = []
    cg: CgroupPath | None = None
    missing: list[CgroupPath] = []
    if cgroup is not None:
        cg, missing = env.fs.resolve_new(cgroup)
        if missing and env.fs.version == 1 and memory_max is None and not no_limit:
            raise UsageProblem(
                f"{cg}: a new v1 memcg without a limit has no OOM of its own; "
                "give --memory-max SIZE (or --no-limit)"
            )
        plan += [f"create cgroup {m}" for m in missing]
        plan += [f"set {name} of {cg} to {format_bytes(value)}" for name, value in limits]
        if delay is not None:
            plan.append(f"set OOM delay of {cg} to {format_duration_ms(delay_ms)}")
        plan.append(f"move {'the child' if stay else f'pid {os.getpid()}'} into {cg}")
    if badness_value is not None:
        plan.append(
            f"register badness {badness_value} for {'the child' if stay else f'pid {os.getpid()}'}"
        )
    plan += [f"set {n}" for n in setenv]
    if who is not None:
        plan.append(f"become uid {who.uid} gid {who.gid}")
    plan.append(f"exec {path}" + "".join(f" {a}" for a in command[1:]))
    if stay:
        plan.append("wait for it" + (", then remove " + ", ".join(missing) if collect else ""))

    if dry_run:
        for step in plan:
            say(f"would {step}")
        return

    delay_setting = None
    if delay_ms is not None:
        delay_setting = (default_namespace() if namespace == "auto" else namespace, delay_ms)
    job = JobSetup(cg, tuple(missing), tuple(limits), delay_setting, badness_value)
    # Check everything that can be checked before changing anything, then undo what was
    # done if a later step still fails: either complete or change nothing.
    job.check(env)
    if stay:
        sys.exit(_run_and_wait(env, job, path, command, environ, who, wait, collect, verbose, plan))
    job.apply(env, os.getpid())
    if verbose:
        for step in plan:
            diagnostic(step)
    sys.stdout.flush()
    sys.stderr.flush()
    reset_signals()
    if who is not None:
        from memcgctl.actions.supervise import become

        become(who)
    try:
        os.execve(path, list(command), environ)
    except OSError as exc:
        cls = CommandNotFound if exc.errno == errno.ENOENT else CommandNotExecutable
        raise cls(f"{command[0]}: {exc.strerror}") from exc


def _environment(setenv: tuple[str, ...]) -> dict[str, str]:
    """This environment plus ``--setenv NAME=VALUE`` (``NAME`` alone: its value here)."""
    environ = dict(os.environ)
    for item in setenv:
        name, eq, value = item.partition("=")
        if not name or "\0" in item:
            raise UsageProblem(f"--setenv {item!r}: want NAME=VALUE or NAME")
        if eq:
            environ[name] = value
        elif name in os.environ:
            environ[name] = os.environ[name]
        else:
            environ.pop(name, None)
    return environ


def _run_and_wait(
    env: Env,
    job: JobSetup,
    path: str,
    command: tuple[str, ...],
    environ: dict[str, str],
    who: User | None,
    wait: bool,
    collect: bool,
    verbose: bool,
    plan: list[str],
) -> int:
    """``--wait``/``--collect``: CMD as a child, set up by its pid; its exit status."""
    from memcgctl.actions import supervise

    supervise.flush_std()
    child, go = supervise.spawn_held(path, command, environ, who)

    def set_up_child() -> None:
        job.apply(env, child)
        if verbose:
            for step in plan:
                diagnostic(step.replace("the child", f"pid {child}"))

    outcome = supervise.supervise(env.fs, child, go, set_up_child, job.cg)
    if wait:
        for line in supervise.describe(outcome, job.cg):
            say(line, err=True)
    if collect:
        for note in supervise.collect(env.fs, list(job.missing)):
            diagnostic(note)
    return outcome.status
