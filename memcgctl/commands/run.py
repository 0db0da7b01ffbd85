"""``run``: start a command in a memcg with its badness and OOM delay, like ``choom -n``
or ``systemd-run -p``: create and join the cgroup, register the badness for this very
process (pid and start time survive exec), then exec the command."""

from __future__ import annotations

import errno
import os
import sys

import click

from memcgctl.actions.launch import check_cgroup_access, find_command, reset_signals, set_up
from memcgctl.commands.common import CgroupName, dry_run_option, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.kernel.cgroupfiles import V1_LIMIT, V2_HIGH, V2_MAX
from memcgctl.render.diag import diagnostic
from memcgctl.render.output import say
from memcgctl.state.store import NAMESPACES, default_namespace
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import (
    CommandNotExecutable,
    CommandNotFound,
    NotSupported,
    UsageProblem,
    Vanished,
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
    """
    badness_value = parse_badness(badness) if badness is not None else None
    delay_ms = parse_delay(delay) if delay is not None else None
    if delay is not None and cgroup is None:
        raise UsageProblem("--delay needs --cgroup (the delay belongs to a cgroup)")
    limits = _limits(env, cgroup, memory_max, memory_high, no_limit)
    path = find_command(command[0])

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
        plan.append(f"move pid {os.getpid()} into {cg}")
    if badness_value is not None:
        plan.append(f"register badness {badness_value} for pid {os.getpid()}")
    plan.append(f"exec {path}" + "".join(f" {a}" for a in command[1:]))

    if dry_run:
        for step in plan:
            say(f"would {step}")
        return

    # Check everything that can be checked before changing anything (an unprivileged
    # user without a usable state directory must not be left half set up), then undo
    # what was done if a later step still fails: either complete or change nothing.
    pid = os.getpid()
    start = 0
    if badness_value is not None:
        try:
            start = env.proc.start_time(pid)
        except Vanished:  # our own /proc entry: only with a foreign --proc-root
            raise UsageProblem(f"pid {pid}: not in {env.proc_root}") from None
        env.registry.check_writable()
    if cg is not None:
        check_cgroup_access(env.fs, cg, missing)
    delay_setting = None
    if delay_ms is not None:
        delay_setting = (default_namespace() if namespace == "auto" else namespace, delay_ms)
    set_up(
        env.fs,
        env.proc,
        env.registry,
        env.is_alive,
        cg,
        missing,
        limits,
        delay_setting,
        pid,
        start,
        badness_value,
    )
    if verbose:
        for step in plan:
            diagnostic(step)
    sys.stdout.flush()
    sys.stderr.flush()
    reset_signals()
    try:
        os.execv(path, list(command))
    except OSError as exc:
        cls = CommandNotFound if exc.errno == errno.ENOENT else CommandNotExecutable
        raise cls(f"{command[0]}: {exc.strerror}") from exc
