"""``memcgctl daemon``: the userspace OOM handler."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import click

from memcgctl.commands.common import CgroupName, dry_run_option, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.logic.decision import Decision
from memcgctl.render.logprio import Priority, prefixed
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import MemcgctlError, OperationFailed, UsageProblem, Vanished
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
    pre_kill: str | None,
    post_kill: str | None,
    hook_timeout: str,
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
    from memcgctl.actions.kill import make_killer
    from memcgctl.daemon import owner
    from memcgctl.daemon.core import DaemonCore, Settings
    from memcgctl.daemon.guardian import Heartbeat
    from memcgctl.daemon.loop import Loop
    from memcgctl.daemon.ports import CAP_SYS_RESOURCE, RealPorts, psi_params
    from memcgctl.daemon.rulesync import RulesSync
    from memcgctl.daemon.sdnotify import Notifier
    from memcgctl.daemon.status import StatusCore
    from memcgctl.daemon.treewatch import TreeWatch
    from memcgctl.daemon.valve import HostLines, Tuning
    from memcgctl.daemon.watchdog import Liveness
    from memcgctl.logic.priority import select_priority
    from memcgctl.snapshot import kernel_params  # every decision's snapshot: load it now
    from memcgctl.state.daemonlock import RootClaim
    from memcgctl.state.journal import Journal
    from memcgctl.state.retention import cgroup_owner
    from memcgctl.vocab.records import daemon_record

    if rules_dir is not None:
        env.rules_dir = rules_dir
    root = env.fs.resolve(root_name)
    if guard is None and not release:
        env.rules  # noqa: B018 - bad rules at start: exit 2 before taking anything over
    if guard is not None:
        _guard(env, root, guard)
        return
    if release:
        _release(env, root, dry_run)
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
    # the kernel arbitrates: flocks held for the daemon's life (state/daemonlock.py);
    # the xattr claim below still names a daemon that uses another state directory
    holder = RootClaim(env.state_dir, root, instance).acquire()
    if holder is not None:
        raise OperationFailed(
            f"{root}: a daemon is already running: {holder}; one daemon per subtree"
        )
    running = owner.running_overlap(env.fs, env.proc, root)
    if running is not None:
        raise OperationFailed(
            f"{root}: a daemon is already running on {running[0]} "
            f"(pid {owner.instance_pid(running[1])}); one daemon per subtree"
        )
    ports = RealPorts(
        env,
        make_killer(env.proc_root, env.fs, env.proc),
        Journal(env.state_dir, owner_of=cgroup_owner(lambda cg: env.fs.path(cg))),
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
    # a non-root shadow run (trying it out) gets one line for what it goes without
    unprivileged_shadow = dry_run and os.geteuid() != 0
    if unprivileged_shadow:
        _log(Priority.WARNING, _shadow_note(env, root))
        ports.say_no_kernel_log = False
    else:
        try:
            other = owner.claim_once(env.fs, env.proc, root, instance)
        except MemcgctlError as exc:
            other = None
            _log(
                Priority.WARNING,
                f"cannot claim {root}: {exc}; a second daemon would not be refused",
            )
        if other is not None:
            raise OperationFailed(
                f"{root}: a daemon is already running on {root} "
                f"(pid {owner.instance_pid(other)}); one daemon per subtree"
            )

    select: Callable[[Snapshot, CgroupPath, Iterable[int]], Decision] = select_priority
    if policy == "kernel":  # imported now, never in the middle of an OOM; only if used
        from memcgctl.logic.kernelheuristic import select_kernel

        def select(snap: Snapshot, oom_root: CgroupPath, exclude: Iterable[int]) -> Decision:
            return select_kernel(snap, oom_root, kernel_params(env.proc, snap))

    heartbeat = None
    if not dry_run and not no_guardian:
        heartbeat = Heartbeat(str(env.state_dir), os.getpid())  # before the guardian looks
        _start_guardian(env, root, instance)
    if not no_mlock and not unprivileged_shadow:
        _mlockall()
    settings = Settings(grace=_seconds(grace), max_rounds=max_rounds, dry_run=dry_run)
    hooks = None
    if pre_kill or post_kill:
        from memcgctl.daemon.hooks import Hooks

        hooks = Hooks(
            pre_kill,
            post_kill,
            _seconds(hook_timeout),
            lambda kind, cg, **f: ports.emit(daemon_record(kind, cg, **f)),
        )
    core = DaemonCore(ports, select, settings, clock=time.monotonic, hooks=hooks)
    # `memcgctl status` reads what it manages from STATE_DIR/daemon-PID.json
    status = StatusCore(
        core,
        env.state_dir,
        StatusCore.facts_of(
            instance=instance,
            root=str(root),
            policy=policy,
            dry_run=dry_run,
            host_delay_ms=host_ms,
            state_dir=str(env.state_dir),
            hierarchy={"mount": str(env.fs.mount), "version": env.fs.version},
        ),
        valves=lambda: dict(ports.valves),
    )
    ports.emit = status.counted(ports.emit)  # type: ignore[method-assign,assignment]
    rules = RulesSync(
        env,
        root,
        lambda kind, cg, fields: ports.emit(daemon_record(kind, cg, **fields)),
        dry_run=dry_run,
    )
    liveness = Liveness(core, time.monotonic, Notifier(), heartbeat)
    ports.pulse = liveness.pulse
    # inotify on the tree: a rescan walks only what changed (daemon/treewatch.py)
    tree = TreeWatch(
        env.fs, root, lambda kind, cg, fields: ports.emit(daemon_record(kind, cg, **fields))
    )
    ports.tree = rules.tree = tree

    def before_rescan(hup: bool) -> None:
        tree.refresh(ports.pulse)  # first: the rules and the managed set read its pass
        rules.check(hup)

    loop = Loop(
        status,
        ports,
        rescan_interval=rescan_s,
        max_sleep=liveness.max_sleep(),
        before_rescan=before_rescan,
        tree=tree,
    )
    loop.install_signal_handlers()
    ports.emit(
        daemon_record("daemon_started", root, policy=policy, dry_run=dry_run, instance=instance)
    )
    try:
        loop.run(until=liveness)
    finally:
        liveness.close()
        tree.close()
        try:
            owner.unclaim(env.fs, root, instance)
            summary: dict[str, object] = {"kernel_kills": core.kernel_kills}
            if dry_run:
                summary["agreed"] = core.agreed
            ports.emit(daemon_record("daemon_stopped", root, **summary))
        finally:
            ports.close_journal()  # after the last record: it reaches the journal


def _shadow_note(env: Env, root: CgroupPath) -> str:
    """The one line a non-root ``--dry-run`` starts with: what it runs without."""
    without = [f"a claim on {root} (a second daemon is not refused)", "mlock"]
    try:
        os.close(os.open(env.kmsg, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC))
    except OSError as exc:
        without.append(
            f"the kernel log ({env.kmsg}: {exc.strerror}; the kernel's own victims are not shown)"
        )
    return f"not root (uid {os.geteuid()}): shadow mode without {', '.join(without)}"


def _release(env: Env, root: CgroupPath, dry_run: bool) -> None:
    """``--release``: restore (or say what would be restored) the knobs and claims of
    daemons no longer running; one line even when there is nothing."""
    from memcgctl.daemon import owner

    verb = "would restore" if dry_run else "restored"
    stale: list[CgroupPath] = []
    if dry_run:  # a real release removes them silently (its own report is the knobs)
        for cg in env.fs.walk(root):
            with contextlib.suppress(Vanished, MemcgctlError):
                held = owner.claim_of(env.fs, cg)
                if held is not None and not owner.instance_alive(env.proc, held):
                    stale.append(cg)
    done = owner.release(env.fs, env.proc, root, dry_run=dry_run)
    for cg, knobs in done:
        click.echo(f"{cg}: {verb} {', '.join(knobs) or 'nothing (mark only)'}")
    for cg in stale:
        pid = owner.instance_pid(owner.claim_of(env.fs, cg) or "")
        click.echo(f"{cg}: would remove the claim of stopped daemon pid {pid}")
    if dry_run and not done and not stale:  # (a real release stays quiet: ExecStopPost)
        click.echo(f"{root}: would release nothing (no marks or claims of stopped daemons)")


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
    """A small process that outlives a SIGKILLed daemon and restores its marks: it
    holds a pidfd on the daemon and runs ``daemon --release`` for this instance once
    the daemon is gone (an orderly stop has released everything: it finds nothing).
    systemd's ExecStopPost does the same; this covers daemons run without systemd."""
    import subprocess

    argv = [sys.executable, "-m", "memcgctl", "--proc-root", str(env.proc_root)]
    if env.cgroup_root is not None:
        argv += ["--cgroup-root", str(env.cgroup_root)]
    argv += ["--state-dir", str(env.state_dir), "daemon", "--root", root, "--guard", instance]
    try:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        _log(Priority.WARNING, f"no guardian ({exc}): a SIGKILL would leave marks until --release")


def _guard(env: Env, root: CgroupPath, instance: str) -> None:
    """The guardian: wait for the daemon ``instance`` to die, then release its marks.
    While it lives, a stopped or hung daemon (daemon/guardian.py) has its marks released
    too, and is told so (it takes its memcgs over again when it comes back)."""
    from memcgctl.daemon import guardian, owner

    pid = owner.instance_pid(instance)
    parts = instance.split("/")
    if pid is None or len(parts) != 3 or not parts[2].isdigit():
        raise UsageProblem(f"--guard {instance!r}: not an instance id")
    start = int(parts[2])
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        fd = -1
    proc_root, state_dir = str(env.proc_root), str(env.state_dir)
    heartbeat = guardian.heartbeat_path(state_dir, pid)
    try:
        while fd >= 0 and owner.instance_alive(env.proc, instance):  # the pidfd is the daemon's
            state = guardian.watch(proc_root, pid, start, heartbeat, fd)
            if state == guardian.DIED:
                break
            for cg, mark in owner.releasable(env.fs, env.proc, root, instance=instance):
                try:
                    knobs = owner.restore(env.fs, cg, mark)
                except (MemcgctlError, OSError):
                    continue
                _log(
                    Priority.WARNING,
                    f"guardian: daemon {pid} {state}; {cg}: restored {', '.join(knobs)}",
                )
            with contextlib.suppress(OSError):
                flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                os.close(os.open(guardian.released_path(state_dir, pid), flags, 0o600))
            if guardian.wait_back(proc_root, pid, start, heartbeat, fd) == guardian.DIED:
                break
    finally:
        if fd >= 0:
            os.close(fd)
    for cg, knobs in owner.release(env.fs, env.proc, root, instance=instance):
        _log(Priority.WARNING, f"guardian: daemon {pid} died; {cg}: restored {', '.join(knobs)}")
    for path in (heartbeat, guardian.released_path(state_dir, pid)):
        with contextlib.suppress(OSError):
            os.unlink(path)
