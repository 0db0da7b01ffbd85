"""Running the daemon from a :class:`~memcgctl.daemon.config.DaemonConfig`: claim the
root, build the ports and the core, start the guardian, lock memory, run the loop, and
hand everything back on the way out (:func:`run`).  Also the two other lives of
``memcgctl daemon``: the guardian process (:func:`guard`) and ``--release``
(:func:`release`).

The modules of the running daemon are imported here, inside the functions: the command
line stays light for ``--help``, ``--release`` and the guardian.
"""

from __future__ import annotations

import contextlib
import os
import resource  # (no more than a C module: imported before privileges may drop)
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from memcgctl.daemon.config import DaemonConfig
from memcgctl.daemon.sdnotify import Notifier
from memcgctl.env import Env
from memcgctl.logic.decision import Decision
from memcgctl.render.envelope import hierarchy_json
from memcgctl.render.logprio import Priority, prefixed
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import MemcgctlError, OperationFailed, UsageProblem, Vanished
from memcgctl.vocab.model import Snapshot

TYPE_CHECKING = False  # (the daemon imports the guardian module only when it starts one)
if TYPE_CHECKING:
    from memcgctl.daemon.guardian import Heartbeat


def log(priority: Priority, line: str) -> None:
    """A stderr line with its syslog priority prefix (journald reads it)."""
    print(prefixed(priority, line), file=sys.stderr, flush=True)


def mlockall() -> None:
    """mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT), best effort: an OOM handler must
    not wait for its own pages to come back from reclaim in the middle of an OOM.  With
    MCL_ONFAULT (as earlyoom) a page is locked once touched instead of every mapped page
    at once: the journal thread's 8 MiB stack and the untouched parts of the libraries
    stay out of memory (31 -> 20 MiB resident).  Kernels before 4.4 lack it: without."""
    from memcgctl.kernel.libc import Libc, errno  # (not ctypes: 0.4 MiB resident)

    try:
        libc = Libc()  # the libc this process already runs on
        if libc.mlockall(1 | 2 | 4) != 0 and libc.mlockall(1 | 2) != 0:
            log(Priority.WARNING, f"mlockall failed: {os.strerror(errno())}; continuing")
    except OSError as exc:
        log(Priority.WARNING, f"mlockall unavailable: {exc}; continuing")


def more_files() -> None:
    """Raise the soft limit on open files to the hard one, best effort.  The daemon
    holds per managed memcg its event fds, the files it looks at (kept open: a pread
    at the event) and a pidfd on the standing plan's victim: systemd's default soft
    limit (1024; the hard one is 512 Ki since systemd 240, for exactly this) would run
    out near a hundred managed memcgs.  The daemon polls (never ``select``), so fds
    past 1024 are fine; its hooks inherit the limit, as under ``LimitNOFILE=``."""
    with contextlib.suppress(OSError, ValueError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard
        if hard == resource.RLIM_INFINITY:  # no soft limit beyond the kernel's nr_open
            with open("/proc/sys/fs/nr_open") as f:
                want = int(f.read())
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


M_ARENA_MAX = -8  # glibc's mallopt(3) parameter


def one_malloc_arena() -> None:
    """glibc gives every thread that mallocs its own arena; the journal thread's would
    stay resident (locked by mlockall) for the few records it formats: ~0.8 MiB of the
    idle daemon, measured.  Python serialises its threads anyway (the GIL), so one arena
    costs no contention worth having.  Best effort: elsewhere (musl) nothing happens."""
    from memcgctl.kernel.libc import Libc

    with contextlib.suppress(OSError, AttributeError):
        Libc().mallopt(M_ARENA_MAX, 1)


def run(env: Env, config: DaemonConfig) -> None:
    """Enforce until SIGTERM/SIGINT (daemon/loop.py), then restore every knob."""
    if config.rules_dir is not None:
        env.rules_dir = config.rules_dir
    env.rules  # noqa: B018 - bad rules at start: exit 2 before taking anything over
    one_malloc_arena()  # before any thread starts (the journal's)
    from memcgctl.actions.kill import make_killer
    from memcgctl.daemon import owner
    from memcgctl.daemon.core import DaemonCore, Settings
    from memcgctl.daemon.guardian import PULSE_SLACK_S, Heartbeat
    from memcgctl.daemon.loop import Loop
    from memcgctl.daemon.ports import CAP_SYS_RESOURCE, RealPorts, psi_params
    from memcgctl.daemon.rulesync import RulesSync
    from memcgctl.daemon.status import StatusCore
    from memcgctl.daemon.treewatch import TreeWatch
    from memcgctl.daemon.watchdog import Liveness
    from memcgctl.logic.priority import select_priority_brief
    from memcgctl.snapshot import kernel_params  # every decision's snapshot: load it now
    from memcgctl.state.daemonlock import RootClaim
    from memcgctl.state.journal import Journal
    from memcgctl.state.retention import cgroup_owner
    from memcgctl.vocab.records import daemon_record

    root, dry_run = config.root, config.dry_run
    privileged = env.proc.has_capability(CAP_SYS_RESOURCE)
    psi = psi_params(config.psi_stall_us, config.psi_window_us, privileged)
    if psi[1] != config.psi_window_us and config.host_delay_ms is not None:
        log(
            Priority.NOTICE,
            f"no CAP_SYS_RESOURCE: PSI window {config.psi_window_us // 1000}ms rounded up to "
            f"{psi[1] // 1000}ms (stall {psi[0] // 1000}ms), as the kernel requires",
        )
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
        host_delay_ms=config.host_delay_ms,
        tuning=config.tuning(psi),
        instance=instance,
        log=sys.stderr,
    )
    # a non-root shadow run (trying it out) gets one line for what it goes without
    unprivileged_shadow = dry_run and os.geteuid() != 0
    if unprivileged_shadow:
        log(Priority.WARNING, _shadow_note(env, root))
        ports.say_no_kernel_log = False
    else:
        try:
            other = owner.claim_once(env.fs, env.proc, root, instance)
        except MemcgctlError as exc:
            other = None
            log(
                Priority.WARNING,
                f"cannot claim {root}: {exc}; a second daemon would not be refused",
            )
        if other is not None:
            raise OperationFailed(
                f"{root}: a daemon is already running on {root} "
                f"(pid {owner.instance_pid(other)}); one daemon per subtree"
            )

    select: Callable[[Snapshot, CgroupPath, Iterable[int]], Decision] = select_priority_brief
    if config.policy == "kernel":  # imported now, never in the middle of an OOM; only if used
        from memcgctl.logic.kernelheuristic import select_kernel

        def select(snap: Snapshot, oom_root: CgroupPath, exclude: Iterable[int]) -> Decision:
            return select_kernel(snap, oom_root, kernel_params(env.proc, snap))

    more_files()
    notifier = Notifier(config.systemd_env)
    heartbeat = None
    if not dry_run and guardian_process(config.guardian, notifier):
        heartbeat = Heartbeat(str(env.state_dir), os.getpid())  # before the guardian looks
        start_guardian(env, root, instance, heartbeat)
    if config.mlock and not unprivileged_shadow:
        mlockall()
    settings = Settings(grace=config.grace, max_rounds=config.max_rounds, dry_run=dry_run)
    hooks = None
    if config.pre_kill or config.post_kill:
        from memcgctl.daemon.hooks import Hooks

        hooks = Hooks(
            config.pre_kill,
            config.post_kill,
            config.hook_timeout,
            lambda kind, cg, **f: ports.emit(daemon_record(kind, cg, **f)),
        )
    core = DaemonCore(
        ports,
        select,
        settings,
        clock=time.monotonic,
        hooks=hooks,
        # a planned kill's steps from the event to the signal (issue 22), on stderr
        debug=lambda kind, cg, fields: ports.recorder.line(Priority.DEBUG, kind, str(cg), **fields),
    )
    # `memcgctl status` reads what it manages from STATE_DIR/daemon-PID.json
    status = StatusCore(
        core,
        env.state_dir,
        StatusCore.facts_of(
            instance=instance,
            root=str(root),
            policy=config.policy,
            dry_run=dry_run,
            host_delay_ms=config.host_delay_ms,
            state_dir=str(env.state_dir),
            hierarchy=hierarchy_json(env.fs.mount, env.fs.version),
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
    liveness = Liveness(core, time.monotonic, notifier, heartbeat)
    # inotify on the tree: a rescan reads only what changed (daemon/treewatch.py)
    tree = TreeWatch(
        env.fs,
        root,
        lambda kind, cg, fields: ports.emit(daemon_record(kind, cg, **fields)),
        # each whole-tree walk, a debug line on stderr (not journaled)
        debug=lambda kind, cg, fields: ports.recorder.line(Priority.DEBUG, kind, str(cg), **fields),
    )
    ports.tree = rules.tree = tree
    # each refresh that kept no standing plan (daemon/choosing.py), a debug line
    core.chooser.debug = lambda kind, cg, fields: ports.recorder.line(
        Priority.DEBUG, kind, str(cg), **fields
    )

    def before_rescan(hup: bool) -> None:
        tree.refresh(ports.pulse)  # first: the rules and the managed set read its pass
        rules.check(hup)

    loop = Loop(
        status,
        ports,
        rescan_interval=config.rescan,
        pulse_due=liveness.due,  # the heartbeat's and the watchdog's next beat
        pulse_slack=PULSE_SLACK_S,
        before_rescan=before_rescan,
        tree=tree,
    )

    def pulse() -> None:  # a long rescan walk: alive, and no OOM waits for it
        liveness.pulse()
        loop.urgent()

    ports.pulse = pulse
    ports.beat = liveness.pulse  # while a choice reads many cgroups: alive, nothing else
    loop.install_signal_handlers()
    ports.emit(
        daemon_record(
            "daemon_started", root, policy=config.policy, dry_run=dry_run, instance=instance
        )
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


def guardian_process(mode: str, notifier: Notifier) -> bool:
    """Whether to start a guardian process.  ``systemd`` hands the guardian's job to the
    unit: ExecStopPost= releases after any death, WatchdogSec= kills a daemon that
    stopped or hangs.  Only a watchdog that systemd really set up for this process
    ($NOTIFY_SOCKET and $WATCHDOG_USEC, $WATCHDOG_PID ours) is taken for it; without
    one, a guardian process after all, said in one line."""
    if mode != "systemd":
        return mode == "process"
    if notifier.active and notifier.every is not None:
        return False
    log(
        Priority.WARNING,
        "--guardian=systemd without systemd's watchdog (no $NOTIFY_SOCKET or "
        "$WATCHDOG_USEC: not a Type=notify unit with WatchdogSec=): starting a guardian "
        "process",
    )
    return True


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


def release(env: Env, root: CgroupPath, dry_run: bool) -> Iterator[str]:
    """``--release``: restore (or say what would be restored) the knobs and claims of
    daemons no longer running; the lines to print, one even when there is nothing."""
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
        yield f"{cg}: {verb} {', '.join(knobs) or 'nothing (mark only)'}"
    for cg in stale:
        pid = owner.instance_pid(owner.claim_of(env.fs, cg) or "")
        yield f"{cg}: would remove the claim of stopped daemon pid {pid}"
    if dry_run and not done and not stale:  # (a real release stays quiet: ExecStopPost)
        yield f"{root}: would release nothing (no marks or claims of stopped daemons)"


def start_guardian(
    env: Env, root: CgroupPath, instance: str, heartbeat: Heartbeat, bash: str | None = ""
) -> None:
    """A small process that outlives a SIGKILLed daemon and restores its marks: a bash
    watcher reading a pipe we write a byte to per beat (daemon/guardwatch.py; 3 MiB
    resident against a Python guardian's 8.7), or, with no bash on PATH (``bash``
    None; "": look it up), the Python guardian (daemon/guardian.py: a pidfd and the
    heartbeat file's mtime).  Either releases a stopped or hung daemon's marks, and
    this instance's once it is gone (an orderly stop has released everything: it finds
    nothing).  systemd's ExecStopPost= and WatchdogSec= do the same
    (``--guardian=systemd``); this covers daemons run without them."""
    from memcgctl.daemon import guardian, guardwatch

    cgroup_root = str(env.cgroup_root) if env.cgroup_root is not None else ""
    args = [str(env.proc_root), cgroup_root, str(env.state_dir), str(root), instance]
    # posix_spawn, not subprocess (0.4 MiB resident for the daemon's life): stdin and
    # stdout /dev/null, a session of its own, no fd of ours but stderr (Python opens its
    # own close-on-exec; what the daemon inherited is closed, as close_fds did) and the
    # watcher's end of the pipe
    actions: list[tuple[int | str, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
    ]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inherited_fds()]
    if bash == "":
        bash = guardwatch.find_bash(dict(os.environ))
    if bash is not None:
        _, pid, start = instance.split("/")
        release = guardian.light_argv(sys.executable, "memcgctl.daemon.guardrelease", "main", args)
        r = heartbeat.pipe()
        fd = 3 if r != 3 else 4  # (a dup2 onto itself would keep it close-on-exec)
        argv = guardwatch.argv(bash, fd, str(env.proc_root), int(pid), int(start), release)
        try:
            os.posix_spawn(
                argv[0],
                argv,
                os.environ,
                file_actions=[*actions, (os.POSIX_SPAWN_DUP2, r, fd)],
                setsid=True,
            )
            return
        except OSError as exc:
            heartbeat.unpipe()
            log(Priority.WARNING, f"no bash guardian ({exc}): starting the Python one")
        finally:
            os.close(r)
    argv = guardian.argv(sys.executable, *args)
    try:
        os.posix_spawn(argv[0], argv, os.environ, file_actions=actions, setsid=True)
    except OSError as exc:
        log(Priority.WARNING, f"no guardian ({exc}): a SIGKILL would leave marks until --release")


def _inherited_fds() -> list[int]:
    """This process's inheritable file descriptors above stderr."""
    out = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return []
    for name in names:
        fd = int(name)
        if fd > 2:
            try:
                if os.get_inheritable(fd):
                    out.append(fd)
            except OSError:  # the listing's own fd, closed by now
                continue
    return out


def guard(env: Env, root: CgroupPath, instance: str) -> None:
    """``daemon --guard INSTANCE`` (hidden): the guardian run through the command line,
    as daemons before the light guardian started it."""
    from memcgctl.daemon import guardian
    from memcgctl.daemon.guardrelease import release_for_guardian

    try:
        guardian.serve(
            instance,
            str(env.proc_root),
            str(env.state_dir),
            lambda state: release_for_guardian(env, root, instance, state),
        )
    except ValueError as exc:
        raise UsageProblem(f"--guard {exc}") from None
