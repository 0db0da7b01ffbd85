"""``memcgctl daemon``: the userspace OOM handler."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable

import click

from memcgctl.commands.common import CgroupName, dry_run_option, pass_env
from memcgctl.env import Env
from memcgctl.logic.decision import Decision
from memcgctl.render.logprio import Priority, prefixed
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import MemcgctlError, OperationFailed, UsageProblem
from memcgctl.vocab.model import Snapshot
from memcgctl.vocab.units import parse_delay, parse_duration_ms


def _log(priority: Priority, line: str) -> None:
    """A stderr line with its syslog priority prefix (journald reads it)."""
    click.echo(prefixed(priority, line), err=True)


def _mlockall() -> None:
    """mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT), best effort: an OOM handler must
    not wait for its own pages to come back from reclaim in the middle of an OOM.  With
    MCL_ONFAULT (as earlyoom) a page is locked once touched instead of every mapped page
    at once: the journal thread's 8 MiB stack and the untouched parts of the libraries
    stay out of memory (31 -> 20 MiB resident).  Kernels before 4.4 lack it: without."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.mlockall(1 | 2 | 4) != 0 and libc.mlockall(1 | 2) != 0:
            _log(
                Priority.WARNING, f"mlockall failed: {os.strerror(ctypes.get_errno())}; continuing"
            )
    except OSError as exc:
        _log(Priority.WARNING, f"mlockall unavailable: {exc}; continuing")


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
    help="Also enforce the policy host-wide (needs --root /): when MemAvailable + SwapFree "
    "falls below --host-short, wait this long (e.g. 1s, 0), then kill the host-wide "
    "priority victim; below --host-critical at once. Off by default.",
)
@click.option(
    "--host-short",
    default="10%",
    show_default=True,
    help="Host: available memory (share of RAM + swap) that starts an OOM episode.",
)
@click.option(
    "--host-critical",
    default="4%",
    show_default=True,
    help="Host: available memory below which the delay is cut short.",
)
@click.option(
    "--headroom",
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
    default="150ms",
    show_default=True,
    help="Host: stall time per window (PSI 'some') that wakes a meminfo check early.",
)
@click.option(
    "--psi-window",
    default="1s",
    show_default=True,
    help="Host: PSI window (500ms-10s).",
)
@click.option(
    "--rescan",
    default="2s",
    show_default=True,
    help="How often to look for new delays (at least 100ms).",
)
@click.option(
    "--release",
    is_flag=True,
    help="Restore every knob a daemon that is no longer running changed (its marks), "
    "then exit (for ExecStopPost). With --dry-run: only list them.",
)
@click.option("--guard", "guard", default=None, hidden=True)
@click.option(
    "--no-guardian",
    is_flag=True,
    help="Start no guardian process (under systemd the unit's ExecStopPost releases).",
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
    host_short: str,
    host_critical: str,
    headroom: str,
    freeze: bool,
    psi_stall: str,
    psi_window: str,
    rescan: str,
    release: bool,
    guard: str | None,
    no_guardian: bool,
    no_mlock: bool,
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
    from memcgctl.actions.kill import make_killer
    from memcgctl.daemon import owner
    from memcgctl.daemon.core import DaemonCore, Settings
    from memcgctl.daemon.loop import Loop
    from memcgctl.daemon.ports import CAP_SYS_RESOURCE, RealPorts, psi_params
    from memcgctl.daemon.valve import HostLines, Tuning
    from memcgctl.logic.priority import select_priority
    from memcgctl.snapshot import kernel_params  # every decision's snapshot: load it now
    from memcgctl.state.journal import Journal
    from memcgctl.vocab.records import daemon_record

    root = env.fs.resolve(root_name)
    if guard is not None:
        _guard(env, root, guard)
        return
    if release:
        for cg, knobs in owner.release(env.fs, env.proc, root, dry_run=dry_run):
            verb = "would restore" if dry_run else "restored"
            click.echo(f"{cg}: {verb} {', '.join(knobs) or 'nothing (mark only)'}")
        return
    host_ms = parse_delay(host_delay) if host_delay is not None else None
    if host_ms is not None and not root.is_root:
        raise UsageProblem("--host-delay needs --root / (the host is the whole hierarchy)")
    stall_us = parse_duration_ms(psi_stall) * 1000
    window_us = parse_duration_ms(psi_window) * 1000
    if not 500_000 <= window_us <= 10_000_000 or not 0 < stall_us <= window_us:
        raise UsageProblem("PSI: need 0 < --psi-stall <= --psi-window, window 500ms-10s")
    rescan_s = _seconds(rescan)
    if rescan_s < 0.1:
        raise UsageProblem(f"--rescan {rescan}: at least 100ms")
    share = _share(headroom, "--headroom", 0.01, 0.5)
    short, critical = _share(host_short, "--host-short"), _share(host_critical, "--host-critical")
    if not 0 < critical < short:
        raise UsageProblem("need 0 < --host-critical < --host-short")
    privileged = env.proc.has_capability(CAP_SYS_RESOURCE)
    stall_us, effective_us = psi_params(stall_us, window_us, privileged)
    if effective_us != window_us and host_ms is not None:
        _log(
            Priority.NOTICE,
            f"no CAP_SYS_RESOURCE: PSI window {window_us // 1000}ms rounded up to "
            f"{effective_us // 1000}ms (stall {stall_us // 1000}ms), as the kernel requires",
        )
    window_us = effective_us
    instance = owner.instance_id(env.proc, os.getpid())
    running = owner.running_overlap(env.fs, env.proc, root)
    if running is not None:
        raise OperationFailed(
            f"{root}: a daemon is already running on {running[0]} "
            f"(pid {owner.instance_pid(running[1])}); one daemon per subtree"
        )
    ports = RealPorts(
        env,
        make_killer(env.proc_root, env.fs, env.proc),
        Journal(env.state_dir),
        root=root,
        dry_run=dry_run,
        host_delay_ms=host_ms,
        tuning=Tuning(
            headroom=share,
            freeze=freeze,
            host=HostLines(short=short, critical=critical, recovered=min(short * 1.5, 0.9)),
            psi_stall_us=stall_us,
            psi_window_us=window_us,
        ),
        instance=instance,
        log=sys.stderr,
    )
    try:
        owner.claim(env.fs, root, instance)
    except MemcgctlError as exc:
        _log(Priority.WARNING, f"cannot claim {root}: {exc}; a second daemon would not be refused")

    select: Callable[[Snapshot, CgroupPath, Iterable[int]], Decision] = select_priority
    if policy == "kernel":  # imported now, never in the middle of an OOM; only if used
        from memcgctl.logic.kernelheuristic import select_kernel

        def select(snap: Snapshot, oom_root: CgroupPath, exclude: Iterable[int]) -> Decision:
            return select_kernel(snap, oom_root, kernel_params(env.proc, snap))

    if not dry_run and not no_guardian:
        _start_guardian(env, root, instance)
    if not no_mlock:
        _mlockall()
    settings = Settings(grace=_seconds(grace), max_rounds=max_rounds, dry_run=dry_run)
    core = DaemonCore(ports, select, settings, clock=time.monotonic)
    loop = Loop(core, ports, rescan_interval=rescan_s)
    loop.install_signal_handlers()
    ports.emit(
        daemon_record("daemon_started", root, policy=policy, dry_run=dry_run, instance=instance)
    )
    try:
        loop.run()
    finally:
        try:
            owner.unclaim(env.fs, root, instance)
            summary: dict[str, object] = {"kernel_kills": core.kernel_kills}
            if dry_run:
                summary["agreed"] = core.agreed
            ports.emit(daemon_record("daemon_stopped", root, **summary))
        finally:
            ports.close_journal()  # after the last record: it reaches the journal


def _share(text: str, option: str, low: float = 0.0, high: float = 1.0) -> float:
    """``10%`` (or ``0.1``) → 0.1, within (low, high]."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        value = float("nan")
    if not t.replace("%", "").replace(".", "", 1).isascii() or not low < value <= high:
        raise UsageProblem(
            f"{option} {text!r}: a share such as 10% (above {low:.0%}, at most {high:.0%})"
        )
    return value


def _start_guardian(env: Env, root: CgroupPath, instance: str) -> None:
    """A small process that outlives a SIGKILLed daemon and restores its marks.

    It is a bare interpreter (``-S -I``) running memcgctl/daemon/guardian.py alone, which
    imports nothing beyond ``os``: it waits for end-of-file on a pipe whose only write
    end this process holds (close-on-exec, kept open for its whole life), then execs
    ``daemon --guard`` for this instance, which releases its marks (after an orderly stop
    it finds nothing).  systemd's ExecStopPost does the same; this covers daemons run
    without systemd."""
    import subprocess

    global _guardian_pipe
    try:
        r, w = os.pipe2(os.O_CLOEXEC)
    except OSError as exc:
        _log(Priority.WARNING, f"no guardian ({exc}): a SIGKILL would leave marks until --release")
        return
    try:
        subprocess.Popen(
            guardian_argv(env, root, instance, r),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            pass_fds=(r,),
        )
    except OSError as exc:
        os.close(w)
        _log(Priority.WARNING, f"no guardian ({exc}): a SIGKILL would leave marks until --release")
    else:
        _guardian_pipe = w  # never closed: the kernel closes it when this process dies
    finally:
        os.close(r)


_guardian_pipe: int | None = None


def guardian_argv(env: Env, root: CgroupPath, instance: str, fd: int) -> list[str]:
    """The guardian's command line: a bare interpreter, the guardian's file, the pipe's
    read end, then what it execs once the daemon is gone."""
    from memcgctl.daemon import guardian

    full = [sys.executable, "-m", "memcgctl", "--proc-root", str(env.proc_root)]
    if env.cgroup_root is not None:
        full += ["--cgroup-root", str(env.cgroup_root)]
    full += ["daemon", "--root", root, "--guard", instance]
    return [sys.executable, "-S", "-I", str(guardian.__file__), str(fd), *full]


def _guard(env: Env, root: CgroupPath, instance: str) -> None:
    """The guardian: wait for the daemon ``instance`` to die, then release its marks."""
    import select as select_mod

    from memcgctl.daemon import owner

    pid = owner.instance_pid(instance)
    if pid is None:
        raise UsageProblem(f"--guard {instance!r}: not an instance id")
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        fd = -1
    if fd >= 0:
        if owner.instance_alive(env.proc, instance):  # the pidfd is the daemon's
            select_mod.select([fd], [], [])
        os.close(fd)
    for cg, knobs in owner.release(env.fs, env.proc, root, instance=instance):
        _log(Priority.WARNING, f"guardian: daemon {pid} died; {cg}: restored {', '.join(knobs)}")
