"""``kill-all``: empty a cgroup subtree, race-free."""

from __future__ import annotations

from typing import Any

import click

from memcgctl.actions.kill import make_killer
from memcgctl.actions.killreport import CHOICES, KillReport, user_kill_records
from memcgctl.commands.common import (
    CgroupName,
    Seconds,
    complete_signal,
    dry_run_option,
    output_options,
    pass_env,
    pid_option,
    unit_option,
)
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.render import diag
from memcgctl.render.envelope import hierarchy_json
from memcgctl.render.output import Output, emit_json, say
from memcgctl.state.journal import Journal
from memcgctl.state.retention import cgroup_owner
from memcgctl.vocab.errors import MemcgctlError, OperationFailed, UsageProblem
from memcgctl.vocab.signals import parse_signal, signal_name


def _survivor_text(report: KillReport, limit: int = 10) -> str:
    parts = [f"{s.pid} ({s.comm}) in {s.cgroup}" for s in report.survivors[:limit]]
    more = len(report.survivors) - limit
    return ", ".join(parts) + (f" and {more} more" if more > 0 else "")


@click.command("kill-all", epilog=epilog("kill-all"))
@click.argument("cgroup", required=False, type=CgroupName())
@pid_option("Kill the whole memory cgroup of PID.")
@unit_option("Kill the whole cgroup of systemd unit NAME.")
@click.option(
    "--signal",
    "sig_text",
    default="KILL",
    show_default=True,
    metavar="SIG",
    shell_complete=complete_signal,
    help="Signal to send: KILL, TERM, INT, 9, ...",
)
@click.option(
    "--grace",
    type=Seconds(),
    default=None,
    metavar="SECONDS",
    help="Send --signal, wait up to SECONDS for the subtree to empty, then SIGKILL what "
    "is left (the SIGKILL phase then has its own --timeout).",
)
@click.option(
    "--timeout",
    type=Seconds(),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long the last (SIGKILL, or the only) phase may take before giving up with "
    "exit 1 naming the survivors; with --grace the whole run takes at most GRACE + TIMEOUT.",
)
@click.option(
    "--mechanism",
    type=click.Choice(CHOICES),
    default="auto",
    show_default=True,
    help="Force a mechanism: kill (v2 cgroup.kill), freeze (v2 cgroup.freeze or the "
    "matching v1 freezer), procs (rounds over cgroup.procs).",
)
@dry_run_option
@output_options
@pass_env
def kill_all(
    env: Env,
    cgroup: str | None,
    pid: int | None,
    unit: str | None,
    sig_text: str,
    grace: float | None,
    timeout: float,
    mechanism: str,
    dry_run: bool,
    out: Output,
) -> None:
    """Kill every task in CGROUP's subtree; return when it is empty.

    Uses the strongest mechanism the kernel has: cgroup.kill (v2, SIGKILL), freeze /
    signal / thaw (v2 cgroup.freeze, or the v1 freezer when it holds exactly the same
    processes), else rounds over cgroup.procs until empty.  Every signal goes through
    a pidfd after re-checking that the process is still in the subtree.  Refuses the
    hierarchy root, init, and a subtree that contains memcgctl itself.
    """
    if cgroup is None and pid is None and unit is None:
        raise UsageProblem("name a cgroup (or --pid PID, --unit NAME)")
    sig = parse_signal(sig_text)
    top = env.target_cgroup(cgroup, pid, unit=unit)
    killer = make_killer(env.proc_root, env.fs, env.proc)
    killer.check_not_root(top)  # before anything walks the subtree (the OOM sample does)
    if dry_run:
        targets, phases = killer.plan(top, sig, grace, mechanism)
        if out.json:
            emit_json(
                {
                    "cgroup": top,
                    "hierarchy": hierarchy_json(env.fs.mount, env.fs.version),
                    "signal": signal_name(sig),
                    "mechanism": phases[0][1],
                    "phases": [{"signal": signal_name(s), "mechanism": m} for s, m in phases],
                    "would_signal": [t.to_json() for t in targets],
                    "dry_run": True,
                }
            )
            return
        how = ", then ".join(f"{signal_name(s)} via {m}" for s, m in phases)
        say(f"{top}: would send {how} to {len(targets)} process(es):")
        for t in targets:
            say(f"  {t.pid:>7}  {t.comm:<16}  {t.cgroup}")
        return

    from memcgctl.kernel import oomstate

    before = oomstate.sample(env.fs, top)
    report = killer.kill_all(top, sig, timeout=timeout, grace=grace, wanted=mechanism)
    under_oom = oomstate.was_under_oom(before, oomstate.sample(env.fs, top))
    kind = "user_kill" if under_oom else "manual_kill"
    warning = _journal(env, report, kind)
    if out.json:
        doc: dict[str, Any] = report.to_json()
        doc["under_oom"] = under_oom
        doc["recorded_as"] = kind
        doc["hierarchy"] = hierarchy_json(env.fs.mount, env.fs.version)
        doc["dry_run"] = False
        emit_json(doc)
    else:
        how = ", then ".join(f"{signal_name(s)} via {m}" for s, m in report.phases)
        say(
            f"{top}: sent {how}; {len(report.killed)} process(es) gone in "
            f"{report.elapsed_s:.3f}s; "
            + ("subtree empty" if report.empty else f"{len(report.survivors)} survivor(s)")
            + ("; it was under OOM (counted as user kills)" if under_oom else "")
        )
        for note in report.notes:
            say(f"  note: {note}")
    if warning:
        diag.warning(warning)
    if not report.empty:
        raise OperationFailed(
            f"{top}: not empty after {report.elapsed_s:.1f}s; survivors: {_survivor_text(report)}"
        )


# The kills come first; journaling them afterwards waits for the lock this long at most.
JOURNAL_WAIT_S = 2.0


def _journal(env: Env, report: KillReport, kind: str) -> str | None:
    """Record the kills; a journal problem (a lock held too long, a refused state
    directory) is a warning, the kills did happen."""
    if not report.killed:
        return None
    try:
        Journal(env.state_dir, owner_of=cgroup_owner(lambda cg: env.fs.path(cg))).append(
            user_kill_records(report, kind=kind), timeout=JOURNAL_WAIT_S
        )
    except MemcgctlError as exc:
        return f"kills not recorded in the journal: {exc.message}"
    return None
