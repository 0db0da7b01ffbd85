"""``memcgctl daemon``: the userspace OOM handler.

Wiring only: the options become one :class:`~memcgctl.daemon.config.DaemonConfig`
(validated there), and :func:`memcgctl.daemon.main.run` runs the daemon."""

from __future__ import annotations

from pathlib import Path

import click

from memcgctl.commands.common import CgroupName, Seconds, Share, dry_run_option, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.vocab.errors import UsageProblem


@click.command(epilog=epilog("daemon"))
@click.option(
    "--root",
    "root_name",
    type=CgroupName(),
    default="/",
    show_default=True,
    help="Manage only memcgs below this cgroup.",
)
@click.option(
    "--policy",
    type=click.Choice(["priority", "kernel"]),
    default="priority",
    show_default=True,
    help="How to choose the victim (the same functions as predict-victim).",
)
@click.option(
    "--grace",
    type=Seconds(unit=True),
    default="500ms",
    show_default=True,
    help="After a kill, how long the OOM may persist before the next victim.",
)
@click.option(
    "--max-rounds",
    type=click.IntRange(1, 100),
    default=3,
    show_default=True,
    help="Victims killed in one OOM before kill-all of the lowest-priority child.",
)
@click.option(
    "--host-delay",
    type=Seconds(unit=True, off=True),
    default=None,
    help="Also enforce the policy host-wide (needs --root /): when MemAvailable + SwapFree "
    "falls below --host-short, wait this long (e.g. 1s, 0), then kill the host-wide "
    "priority victim; below --host-critical at once. Off by default.",
)
@click.option(
    "--host-short",
    type=Share(),
    default="10%",
    show_default=True,
    help="Host: available memory (share of RAM + swap) that starts an OOM episode.",
)
@click.option(
    "--host-critical",
    type=Share(),
    default="4%",
    show_default=True,
    help="Host: available memory below which the delay is cut short.",
)
@click.option(
    "--headroom",
    type=Share(),
    default="10%",
    show_default=True,
    help="cgroup v2: the OOM valve (memory.high) sits this share of memory.max below it.",
)
@click.option(
    "--freeze/--no-freeze",
    default=True,
    show_default=True,
    help="cgroup v2: freeze the OOM domain (cgroup.freeze) when allocations outrun the "
    "valve's throttling, until the victim has died.",
)
@click.option(
    "--psi-stall",
    type=Seconds(unit=True),
    default="150ms",
    show_default=True,
    help="Host: stall time per window (PSI 'some') that wakes a meminfo check early.",
)
@click.option(
    "--psi-window",
    type=Seconds(unit=True),
    default="1s",
    show_default=True,
    help="Host: PSI window (500ms-10s).",
)
@click.option(
    "--rescan",
    type=Seconds(unit=True),
    default="2s",
    show_default=True,
    help="How often to look at the managed memcgs and the rules between events (at "
    "least 100ms); new cgroups, delays and limit writes are noticed at once (inotify).",
)
@click.option(
    "--release",
    is_flag=True,
    help="Restore every knob a daemon that is no longer running changed (its marks), "
    "then exit (for ExecStopPost). With --dry-run: only list them.",
)
@click.option("--guard", "guard", default=None, hidden=True)
@click.option(
    "--guardian",
    type=click.Choice(["process", "systemd", "none"]),
    default=None,
    show_default="process",
    help="What releases the knobs if the daemon dies, stops or hangs: a small guardian "
    "process; systemd (install-unit's unit: ExecStopPost= and WatchdogSec=; a guardian "
    "process after all, with a warning, if systemd set up no watchdog); or none.",
)
@click.option("--no-guardian", is_flag=True, hidden=True, help="--guardian=none (old units).")
@click.option(
    "--no-mlock",
    is_flag=True,
    help="Do not lock the daemon's memory (by default it calls mlockall so that its own "
    "pages are never reclaimed while it handles an OOM).",
)
@click.option(
    "--pre-kill",
    "pre_kill",
    metavar="CMD",
    default=None,
    help="Run CMD (sh -c) when a victim is chosen, before it is killed; env "
    "MEMCGCTL_VICTIM_PID, MEMCGCTL_VICTIM_CGROUP, MEMCGCTL_VICTIM_BADNESS.  Never delays "
    "the kill: it gets at most --hook-timeout and never past the kill's deadline.",
)
@click.option(
    "--post-kill",
    "post_kill",
    metavar="CMD",
    default=None,
    help="Run CMD (sh -c) after a kill, in the background; env as --pre-kill, plus "
    "MEMCGCTL_KILLED_PIDS.",
)
@click.option(
    "--hook-timeout",
    type=Seconds(unit=True),
    default="1s",
    show_default=True,
    metavar="DURATION",
    help="How long a hook may run before it is killed (with its process group).",
)
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Badness rules directory (default: the global --rules). Reloaded on SIGHUP and "
    "when a file changes; a bad file keeps the last good rules.",
)
@dry_run_option
@pass_env
def daemon(
    env: Env,
    root_name: str,
    policy: str,
    grace: float,
    max_rounds: int,
    host_delay: float | None,
    host_short: float,
    host_critical: float,
    headroom: float,
    freeze: bool,
    psi_stall: float,
    psi_window: float,
    rescan: float,
    release: bool,
    guard: str | None,
    guardian: str | None,
    no_guardian: bool,
    no_mlock: bool,
    pre_kill: str | None,
    post_kill: str | None,
    hook_timeout: float,
    rules_dir: Path | None,
    dry_run: bool,
) -> None:
    """Enforce the priority policy as a userspace OOM handler.

    Manages every memcg with an OOM delay (set-delay) below --root. cgroup v1: sets
    oom_kill_disable=1 so an OOM pauses the memcg. cgroup v2: holds the memcg's OOM
    domain back with memory.high below memory.max (the OOM valve), freezing it if
    allocations outrun the throttling. The host (--host-delay): watches MemAvailable.
    On an OOM it reports under_oom at once, waits until the OOM is resolved or the
    delay expires, then kills the policy's victim, and escalates if the OOM persists.
    Every decision is logged on stderr and journaled. SIGTERM/SIGINT restore every
    knob it changed; a guardian process restores them if the daemon is killed.
    --dry-run (shadow mode) changes nothing and reports, for each kernel OOM kill,
    what the policy would have killed instead.
    """
    from memcgctl.daemon import main
    from memcgctl.daemon.config import DaemonConfig, systemd_env

    root = env.fs.resolve(root_name)
    if guard is not None:
        main.guard(env, root, guard)
        return
    if release:
        for line in main.release(env, root, dry_run):
            click.echo(line)
        return
    if no_guardian and guardian not in (None, "none"):
        raise UsageProblem(f"--no-guardian and --guardian={guardian}: give one of them")
    config = DaemonConfig(
        root=root,
        policy=policy,
        dry_run=dry_run,
        grace=grace,
        max_rounds=max_rounds,
        host_delay_ms=None if host_delay is None else round(host_delay * 1000),
        host_short=host_short,
        host_critical=host_critical,
        psi_stall_us=round(psi_stall * 1_000_000),
        psi_window_us=round(psi_window * 1_000_000),
        headroom=headroom,
        freeze=freeze,
        rescan=rescan,
        pre_kill=pre_kill,
        post_kill=post_kill,
        hook_timeout=hook_timeout,
        rules_dir=rules_dir,
        guardian="none" if no_guardian else guardian or "process",
        mlock=not no_mlock,
        systemd_env=systemd_env(),
    )
    if env.program:  # the daemon runs in an interpreter without click (1.5 MiB less)
        from memcgctl.commands.daemonrun import handoff

        handoff(env, config)  # exec: back here only if it could not
    main.run(env, config)
