"""``set-limit``: lower (or raise) a memory limit, the policy choosing who makes room."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from memcgctl.commands.common import CgroupName, Seconds, dry_run_option, output_options, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.render import diag
from memcgctl.render.output import Output, emit_json, say
from memcgctl.vocab.errors import MemcgctlError, UsageProblem

if TYPE_CHECKING:
    from memcgctl.actions.shrink import ShrinkKill

# kernels take at most PAGE_COUNTER_MAX pages; anything this large is a typo
MAX_LIMIT = 1 << 62
JOURNAL_WAIT_S = 2.0


def parse_limit(text: str) -> int | None:
    """A size (``100M``, ``1.5G``, bytes) or ``max`` (no limit)."""
    from memcgctl.vocab.units import parse_size

    if text.strip().lower() in ("max", "unlimited", "infinity"):
        return None
    value = parse_size(text, "the limit")
    if value >= MAX_LIMIT:
        raise UsageProblem(f"{text!r}: the limit is too large (use 'max' for no limit)")
    return value


@click.command("set-limit", epilog=epilog("set-limit"))
@click.argument("cgroup", type=CgroupName())
@click.argument("size")
@click.option(
    "--timeout",
    type=Seconds(),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Give up (exit 1, limit unchanged) if the usage does not fit by then.",
)
@dry_run_option
@output_options
@pass_env
def set_limit(env: Env, cgroup: str, size: str, timeout: float, dry_run: bool, out: Output) -> None:
    """Set CGROUP's memory limit to SIZE (64M, 1.5G, bytes, or max) safely.

    Lowering memory.max below the usage makes the kernel OOM-kill by its own heuristic
    inside the write (v2; v1 refuses with EBUSY).  Instead, when the usage is above
    SIZE, the memcg is held at memory.high = SIZE (v2), the priority policy's victims
    are killed one at a time (the same choice as predict-victim) until the usage fits,
    and only then is the limit written.  Exit 1 with the limit unchanged when nothing
    killable is left or --timeout passes.
    """
    from memcgctl.actions.kill import make_killer
    from memcgctl.actions.shrink import Shrinker
    from memcgctl.render.limittext import shrink_lines

    limit = parse_limit(size)
    cg = env.target_cgroup(cgroup, None)
    shrinker = Shrinker(env, make_killer(env.proc_root, env.fs, env.proc), timeout=timeout)
    if dry_run:
        report = shrinker.plan(cg, limit)
    else:
        kills: list[ShrinkKill] = []
        try:
            report = shrinker.shrink(cg, limit, kills.append)
        finally:
            _journal(env, cg, kills)
    if out.json:
        emit_json(report.to_json())
    else:
        for line in shrink_lines(report):
            say(line)


def _journal(env: Env, cg: str, kills: list[ShrinkKill]) -> None:
    """Record the kills as ``manual_kill`` (an operator's shrink, not an OOM: counted
    nowhere, shown by ``events``); a journal problem is a warning."""
    if not kills:
        return
    from memcgctl.state.journal import Journal
    from memcgctl.vocab.records import user_kill

    records = [
        user_kill(
            kind="manual_kill",
            cgroup=k.cgroup,
            pid=k.pid,
            comm=k.comm,
            signal="SIGKILL",
            mechanism="pidfd",
            target=cg,
            by="set-limit",
        )
        for k in kills
    ]
    try:
        Journal(env.state_dir).append(records, timeout=JOURNAL_WAIT_S)
    except MemcgctlError as exc:
        diag.warning(f"kills not recorded in the journal: {exc.message}")
