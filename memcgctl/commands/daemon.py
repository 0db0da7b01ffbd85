"""``memcgctl daemon``: the userspace OOM handler (SPEC §7)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

import click

from memcgctl.commands.common import CgroupName, dry_run_option, pass_env
from memcgctl.env import Env
from memcgctl.errors import UsageProblem
from memcgctl.model import Snapshot
from memcgctl.policy import Decision
from memcgctl.units import parse_delay, parse_duration_ms


def _mlockall() -> None:
    """mlockall(MCL_CURRENT | MCL_FUTURE), best effort: an OOM handler must not wait for
    its own pages to come back from reclaim in the middle of an OOM."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.mlockall(1 | 2) != 0:
            click.echo(
                f"<4>mlockall failed: {os.strerror(ctypes.get_errno())}; continuing", err=True
            )
    except OSError as exc:
        click.echo(f"<4>mlockall unavailable: {exc}; continuing", err=True)


def _seconds(text: str) -> float:
    return parse_duration_ms(text) / 1000


@click.command()
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
    default=None,
    help="Also watch host memory pressure (/proc/pressure/memory) and kill the host-wide "
    "priority victim when it lasts this long (e.g. 5s). Off by default.",
)
@click.option(
    "--psi-stall",
    default="150ms",
    show_default=True,
    help="v2/host: stall time per window that counts as pressure (PSI 'some').",
)
@click.option(
    "--psi-window",
    default="1s",
    show_default=True,
    help="v2/host: PSI window (500ms-10s).",
)
@click.option("--rescan", default="2s", show_default=True, help="How often to look for new delays.")
@click.option(
    "--release",
    is_flag=True,
    help="Restore oom_kill_disable on every memcg a (crashed) daemon paused, then exit "
    "(for ExecStopPost).",
)
@click.option(
    "--no-mlock",
    is_flag=True,
    help="Do not lock the daemon's memory (by default it calls mlockall so that its own "
    "pages are never reclaimed while it handles an OOM).",
)
@dry_run_option
@pass_env
def daemon(
    env: Env,
    root_name: str,
    policy: str,
    grace: str,
    max_rounds: int,
    host_delay: str | None,
    psi_stall: str,
    psi_window: str,
    rescan: str,
    release: bool,
    no_mlock: bool,
    dry_run: bool,
) -> None:
    """Enforce the priority policy as a userspace OOM handler.

    Manages every memcg with an OOM delay (set-delay). cgroup v1: sets
    oom_kill_disable=1 so an OOM pauses the memcg; reports under_oom at once; waits
    until the OOM is resolved or the delay expires, then kills the policy's victim;
    escalates if the OOM persists. cgroup v2 and the host: acts before the kernel
    when PSI memory pressure lasts longer than the delay. Every decision is logged on
    stderr and appended to the journal. On SIGTERM/SIGINT it restores everything it
    changed; --dry-run decides and reports but kills and changes nothing.
    """
    from memcgctl.actions.kill import make_killer
    from memcgctl.daemon.core import DaemonCore, Settings
    from memcgctl.daemon.loop import Loop
    from memcgctl.daemon.ports import CAP_SYS_RESOURCE, RealPorts, psi_params
    from memcgctl.journal import Journal
    from memcgctl.policy import select_kernel, select_priority
    from memcgctl.snapshot import kernel_params

    root = env.fs.resolve(root_name)
    host_ms = parse_delay(host_delay) if host_delay is not None else None
    if host_ms is not None and root != "/":
        raise UsageProblem("--host-delay needs --root / (the host is the whole hierarchy)")
    stall_us = parse_duration_ms(psi_stall) * 1000
    window_us = parse_duration_ms(psi_window) * 1000
    if not 500_000 <= window_us <= 10_000_000 or not 0 < stall_us <= window_us:
        raise UsageProblem("PSI: need 0 < --psi-stall <= --psi-window, window 500ms-10s")
    privileged = env.proc.has_capability(CAP_SYS_RESOURCE)
    stall_us, effective_us = psi_params(stall_us, window_us, privileged)
    if effective_us != window_us:
        click.echo(
            f"<5>no CAP_SYS_RESOURCE: PSI window {window_us // 1000}ms rounded up to "
            f"{effective_us // 1000}ms (stall {stall_us // 1000}ms), as the kernel requires",
            err=True,
        )
        window_us = effective_us
    ports = RealPorts(
        env,
        make_killer(env.proc_root, env.fs, env.proc),
        Journal(env.state_dir),
        root=root,
        dry_run=dry_run,
        host_delay_ms=host_ms,
        psi_stall_us=stall_us,
        psi_window_us=window_us,
        log=sys.stderr,
    )
    if release:
        released = [cg for cg in ports.marked() if ports.unpause(cg)]
        for cg in released:
            click.echo(f"{cg}: restored oom_kill_disable")
        return

    def select(snap: Snapshot, oom_root: str, exclude: Iterable[int]) -> Decision:
        if policy == "kernel":
            return select_kernel(snap, oom_root, kernel_params(env.proc, snap))
        return select_priority(snap, oom_root, exclude)

    if not no_mlock:
        _mlockall()
    settings = Settings(
        grace=_seconds(grace),
        max_rounds=max_rounds,
        # a PSI trigger fires at most once per window: pressure has ended only after
        # more than two windows of silence
        pressure_window=2 * window_us / 1e6 + 0.1,
        dry_run=dry_run,
    )
    loop = Loop(DaemonCore(ports, select, settings), ports, rescan_interval=_seconds(rescan))
    loop.install_signal_handlers()
    ports.emit({"kind": "daemon_started", "cgroup": root, "policy": policy, "dry_run": dry_run})
    loop.run()
    ports.emit({"kind": "daemon_stopped", "cgroup": root})
