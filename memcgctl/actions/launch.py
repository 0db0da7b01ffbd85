"""Starting a command in a memcg (``run``): find the command, check that the cgroup can be
created or joined, then create it, set its limits and OOM delay, move this process in
and register its badness — all or nothing: what was done is undone if a later step
fails.  The caller then execs the command (pid and start time survive exec)."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
from collections.abc import Callable

from memcgctl.env import Env
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.procfs import ProcFs
from memcgctl.state.store import OOM_DELAY, ProcessRegistry, write_setting
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import (
    CommandNotExecutable,
    CommandNotFound,
    PermissionDenied,
    UsageProblem,
    Vanished,
)
from memcgctl.vocab.structs import dataclass


def find_command(cmd: str) -> str:
    """The file that ``execvp`` would run, or raise :class:`CommandNotFound` (127) or
    :class:`CommandNotExecutable` (126)."""
    if "/" in cmd:
        if not os.path.exists(cmd):
            raise CommandNotFound(f"{cmd}: command not found")
        if os.path.isdir(cmd) or not os.access(cmd, os.X_OK):
            raise CommandNotExecutable(f"{cmd}: cannot execute (permission denied)")
        return cmd
    found = shutil.which(cmd)
    if found is None:
        raise CommandNotFound(f"{cmd}: command not found")
    return found


def check_cgroup_access(fs: CgroupFs, cg: CgroupPath, missing: list[CgroupPath]) -> None:
    """Refuse (exit 4) before any change when we could not create or join ``cg``."""
    if missing:
        parent = missing[0].parent or ROOT
        where = fs.path(parent)
        if not os.access(where, os.W_OK | os.X_OK):
            raise PermissionDenied(f"{where}: permission denied (cannot create {missing[0]})")
        return
    procs = os.path.join(fs.path(cg), "cgroup.procs")
    if not os.access(procs, os.W_OK):
        raise PermissionDenied(f"{procs}: permission denied (cannot join {cg})")


@dataclass(frozen=True)
class JobSetup:
    """What ``run`` sets up for its command, the same whether it then execs in place or
    stays the command's parent: ``cg`` (None: the current cgroup) with the ``missing``
    ancestors to create, ``limits`` ((file, bytes)) written before anything runs in it,
    the OOM ``delay`` ((xattr namespace, ms)) and the process's ``badness``."""

    cg: CgroupPath | None = None
    missing: tuple[CgroupPath, ...] = ()
    limits: tuple[tuple[str, int], ...] = ()
    delay: tuple[str, int] | None = None
    badness: int | None = None

    def check(self, env: Env) -> None:
        """Refuse before any change what would fail half-way (an unprivileged user
        without a usable state directory must not be left half set up)."""
        if self.badness is not None:
            env.registry.check_writable()
        if self.cg is not None:
            check_cgroup_access(env.fs, self.cg, list(self.missing))

    def apply(self, env: Env, pid: int) -> None:
        """Set it up for ``pid`` (this process, or the held child): all or nothing."""
        start = 0
        if self.badness is not None:  # the registry keys a process by pid and start time
            try:
                start = env.proc.start_time(pid)
            except Vanished:  # a live pid without a /proc entry: a foreign --proc-root
                raise UsageProblem(f"pid {pid}: not in {env.proc_root}") from None
        set_up(env.fs, env.proc, env.registry, env.is_alive, self, pid, start)


def _restore_xattr(fs: CgroupFs, cg: CgroupPath, name: str, previous: bytes | None) -> None:
    if previous is None:
        fs.remove_xattr(cg, name)
    else:
        fs.set_xattr(cg, name, previous)


def set_up(
    fs: CgroupFs,
    proc: ProcFs,
    registry: ProcessRegistry,
    is_alive: Callable[[int, int], bool],
    job: JobSetup,
    pid: int,
    start: int,
) -> None:
    """Create the job's missing cgroups (parents first), write its limits (before
    anything runs in it), the OOM delay, move ``pid`` into its cgroup and register its
    badness (``start``: the pid's start time); on any failure undo what was done, then
    re-raise."""
    cg, missing, limits, delay, badness = job.cg, job.missing, job.limits, job.delay, job.badness
    undo: list[Callable[[], None]] = []
    try:
        if cg is not None:
            for m in missing:
                fs.make(m)
                undo.append(functools.partial(os.rmdir, fs.path(m)))
                parent = m.parent or ROOT
                # v2: a new cgroup is a memcg only if its parent hands the controller down
                if fs.version == 2 and not fs.has_file(m, "memory.max"):
                    fs.enable_memory_controller(parent)
            for name, value in limits:  # before anything runs in it
                old = fs.read(cg, name)
                fs.write(cg, name, str(value))
                if old is not None and not missing:
                    undo.append(functools.partial(fs.write, cg, name, old.strip()))
            if delay is not None:
                ns, delay_ms = delay
                name = f"{ns}.{OOM_DELAY}"
                previous = fs.get_xattr(cg, name)
                write_setting(fs, cg, OOM_DELAY, delay_ms, ns)
                undo.append(lambda: _restore_xattr(fs, cg, name, previous))
            old_cg = fs.from_proc_path(proc.memory_cgroup(pid, fs.version))
            fs.attach(cg, pid)
            undo.append(lambda: fs.attach(old_cg, pid))
        if badness is not None:
            registry.update({(pid, start): badness}, is_alive)
    except BaseException:
        for revert in reversed(undo):
            with contextlib.suppress(Exception):
                revert()
        raise


def reset_signals() -> None:
    """Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec, so restore the
    defaults or ``memcgctl run -- yes | head`` would never end."""
    for name in ("SIGPIPE", "SIGXFSZ"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, signal.SIG_DFL)
