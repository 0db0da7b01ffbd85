"""What the guardian process does when it must act (:mod:`~memcgctl.daemon.guardian`):
put back the marks of a daemon that died, stopped or hangs.

Apart from :mod:`memcgctl.daemon.main` on purpose: the guardian imports this only when it
acts, while the memcg waits for it, so it brings only what restoring needs (the hierarchy
and the ownership marks), not the daemon's configuration, decisions and rendering — a
third of the import time, which under emulation is most of a release."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from memcgctl.daemon import guardian, owner
from memcgctl.env import Env
from memcgctl.render.logprio import Priority, prefixed
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import MemcgctlError


def guardian_release(
    proc_root: str, cgroup_root: str, state_dir: str, root: str, instance: str, state: str
) -> None:
    """Restore the marks of the daemon ``instance`` below ``root``; the daemon is
    ``state`` (guardian.DIED, STOPPED or HUNG)."""
    from pathlib import Path

    env = Env(
        cgroup_root=Path(cgroup_root) if cgroup_root else None,
        proc_root=Path(proc_root),
        state_dir=Path(state_dir),
    )
    release_for_guardian(env, env.fs.resolve(root), instance, state)


def release_for_guardian(env: Env, root: CgroupPath, instance: str, state: str) -> None:
    pid = owner.instance_pid(instance)
    if state == guardian.DIED:
        for cg, knobs in owner.release(env.fs, env.proc, root, instance=instance):
            _log(f"guardian: daemon {pid} died; {cg}: restored {', '.join(knobs)}")
        return
    for cg, mark in owner.releasable(env.fs, env.proc, root, instance=instance):
        try:
            knobs = owner.restore(env.fs, cg, mark)
        except (MemcgctlError, OSError):
            continue
        _log(f"guardian: daemon {pid} {state}; {cg}: restored {', '.join(knobs)}")


def main(args: Sequence[str]) -> int:
    """The release the bash watcher runs (:mod:`~memcgctl.daemon.guardwatch`, through a
    :func:`~memcgctl.daemon.guardian.light_argv` command line): ``PROC_ROOT CGROUP_ROOT
    STATE_DIR ROOT INSTANCE STATE``.  Restores the marks, then, for a stopped or hung
    daemon, leaves the *released* note (the daemon takes over afresh when it runs
    again); for a dead one, removes its heartbeat and note."""
    if len(args) != 6 or args[5] not in (guardian.DIED, guardian.STOPPED, guardian.HUNG):
        _log("guardian: want PROC_ROOT CGROUP_ROOT STATE_DIR ROOT INSTANCE STATE", Priority.ERR)
        return 2
    proc_root, cgroup_root, state_dir, root, instance, state = args
    pid = owner.instance_pid(instance)
    if pid is None:
        _log(f"guardian: {instance!r}: not an instance id", Priority.ERR)
        return 2
    heartbeat = guardian.heartbeat_path(state_dir, pid)
    note = guardian.released_path(state_dir, pid)
    if state == guardian.DIED and not _gone(proc_root, instance, EXIT_WAIT_S):
        # the pipe ended (or bash's read failed) but the daemon runs: never take a
        # living daemon's marks; the Python guardian watches it from here
        _log(f"guardian: daemon {pid} runs without its pipe: the Python guardian takes over")
        argv = guardian.argv(sys.executable, proc_root, cgroup_root, state_dir, root, instance)
        os.execv(argv[0], argv)
    try:
        guardian_release(proc_root, cgroup_root, state_dir, root, instance, state)
    except (MemcgctlError, OSError) as exc:  # (a root removed meanwhile): said, no note
        _log(f"guardian: daemon {pid} {state}: {exc}", Priority.ERR)
        return 1
    finally:
        if state == guardian.DIED:
            for path in (heartbeat, note):
                with contextlib.suppress(OSError):
                    os.unlink(path)
    if state != guardian.DIED:
        with contextlib.suppress(OSError):
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(note, flags, 0o600))
    return 0


EXIT_WAIT_S = 2.0  # at the pipe's end: how long an exiting daemon may take to be gone


def _gone(proc_root: str, instance: str, wait_s: float) -> bool:
    """Whether the daemon ``instance`` is gone (no such process, another process's pid,
    a zombie), waiting up to ``wait_s`` for it to exit (its files close before it is a
    zombie: the pipe's end of file may come first)."""
    import select

    _, pid, start = instance.split("/")
    fd = -1
    try:
        fields = guardian._stat_fields(proc_root, int(pid))
        if fields is None or len(fields) < 20 or fields[19] != start or fields[0] in ("Z", "X"):
            return True
        fd = os.pidfd_open(int(pid))
        fields = guardian._stat_fields(proc_root, int(pid))  # still ours, now pinned
        if fields is None or len(fields) < 20 or fields[19] != start:
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)  # readable once it has exited
        return bool(poller.poll(int(wait_s * 1000)))
    except OSError:  # (no such process any more)
        return True
    finally:
        if fd >= 0:
            os.close(fd)


def _log(line: str, priority: Priority = Priority.WARNING) -> None:
    print(prefixed(priority, line), file=sys.stderr, flush=True)
