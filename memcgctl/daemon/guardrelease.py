"""What the guardian process does when it must act (:mod:`~memcgctl.daemon.guardian`):
put back the marks of a daemon that died, stopped or hangs.

Apart from :mod:`memcgctl.daemon.main` on purpose: the guardian imports this only when it
acts, while the memcg waits for it, so it brings only what restoring needs (the hierarchy
and the ownership marks), not the daemon's configuration, decisions and rendering — a
third of the import time, which under emulation is most of a release."""

from __future__ import annotations

import sys

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


def _log(line: str) -> None:
    print(prefixed(Priority.WARNING, line), file=sys.stderr, flush=True)
