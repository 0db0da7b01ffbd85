"""``run --wait`` / ``--collect``: memcgctl stays outside the job's memcg as its parent,
like ``systemd-run --wait --collect``.

The child is forked first and waits on a pipe; the parent sets the memcg up with the
*child's* pid (create, limits, delay, attach, badness — :func:`~memcgctl.actions.launch.set_up`,
all or nothing), then lets it exec.  The parent waits for it (passing on SIGINT, SIGTERM
and SIGHUP), measures runtime, the memcg's peak memory and its OOM kills, and with
``collect`` removes the cgroups it created once they are empty.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import OperationFailed, UsageProblem, Vanished
from memcgctl.vocab.structs import dataclass


@dataclass(frozen=True)
class User:
    uid: int
    gid: int
    name: str | None


def resolve_user(spec: str) -> User:
    """``--uid``: a user name or a number (then its passwd entry's group, if any)."""
    import pwd

    try:
        entry = pwd.getpwuid(int(spec)) if spec.isascii() and spec.isdigit() else pwd.getpwnam(spec)
    except KeyError:
        if spec.isascii() and spec.isdigit():
            return User(int(spec), int(spec), None)
        raise UsageProblem(f"--uid {spec}: no such user") from None
    return User(entry.pw_uid, entry.pw_gid, entry.pw_name)


def become(user: User) -> None:
    """Drop to ``user`` (groups, gid, then uid) — in the child, before exec."""
    if user.name is not None:
        os.initgroups(user.name, user.gid)
    else:
        os.setgroups([])
    os.setgid(user.gid)
    os.setuid(user.uid)


@dataclass(frozen=True)
class Outcome:
    status: int  # the exit status memcgctl returns: CMD's own, or 128 + signal
    code: str  # "exited" | "killed"
    detail: int  # exit code or signal number
    runtime_s: float
    peak_bytes: int | None
    oom_kills: int | None
    oom_killed: bool  # the main process died of an OOM kill


def _oom_kills(fs: CgroupFs, cg: CgroupPath) -> int | None:
    """Kernel OOM kills in ``cg``'s subtree (v1 sums the local counters)."""
    try:
        if fs.version == 2:
            return fs.events(cg).get("oom_kill")
        return sum(fs.oom_control(c).get("oom_kill", 0) for c in fs.walk(cg))
    except (Vanished, OSError):
        return None


def _peak(fs: CgroupFs, cg: CgroupPath) -> int | None:
    name = "memory.peak" if fs.version == 2 else "memory.max_usage_in_bytes"
    try:
        text = fs.read(cg, name)
    except (Vanished, OSError):
        return None
    return int(text) if text is not None and text.strip().isdigit() else None


def spawn_held(
    path: str, argv: Sequence[str], environ: Mapping[str, str], user: User | None
) -> tuple[int, int]:
    """Fork a child that waits for a byte on a pipe, then execs (126/127 on failure).
    Returns (pid, the pipe's write end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(w)
            if os.read(r, 1) != b"g":
                os._exit(1)  # the parent gave up (set-up failed)
            os.close(r)
            if user is not None:
                become(user)
            from memcgctl.actions.launch import reset_signals

            reset_signals()
            os.execve(path, list(argv), dict(environ))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.write(2, f"memcgctl: {argv[0]}: {exc.strerror}\n".encode())
            os._exit(127 if isinstance(exc, FileNotFoundError) else 126)
        finally:
            os._exit(1)
    os.close(r)
    return pid, w


def supervise(
    fs: CgroupFs,
    pid: int,
    go: int,
    set_up_child: Callable[[], None],
    cg: CgroupPath | None,
) -> Outcome:
    """Set the child up (``set_up_child``), release it, wait for it; what happened."""
    try:
        set_up_child()
    except BaseException:
        os.close(go)  # the child reads EOF and exits
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise
    kills_before = _oom_kills(fs, cg) if cg is not None else None
    forwarded = {
        sig: signal.signal(sig, lambda s, _f: os.kill(pid, s))
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    start = time.monotonic()
    os.write(go, b"g")
    os.close(go)
    try:
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        for sig, handler in forwarded.items():
            signal.signal(sig, handler)
    runtime = time.monotonic() - start
    kills_after = _oom_kills(fs, cg) if cg is not None else None
    kills = (
        kills_after - kills_before if kills_after is not None and kills_before is not None else None
    )
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        code, detail, exit_status = "killed", signum, 128 + signum
    else:
        detail = os.WEXITSTATUS(status)
        code, exit_status = "exited", detail
    oom_killed = code == "killed" and detail == signal.SIGKILL and bool(kills)
    peak = _peak(fs, cg) if cg is not None else None
    return Outcome(exit_status, code, detail, runtime, peak, kills, oom_killed)


def collect(fs: CgroupFs, created: Sequence[CgroupPath], timeout: float = 2.0) -> list[str]:
    """Remove the cgroups ``run`` created, deepest first, once empty (the kernel
    removes a task from cgroup.procs a moment after it is reaped).  Returns notes on
    what had to stay (still has processes)."""
    notes: list[str] = []
    for cg in sorted(created, key=lambda c: -c.count("/")):
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(fs.path(cg))
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    left = len(fs.procs(cg)) if fs.exists(cg) else 0
                    why = f"{left} process(es) still in it" if left else exc.strerror
                    notes.append(f"{cg}: not removed ({why})")
                    break
                time.sleep(0.01)
    return notes


def describe(outcome: Outcome, cg: CgroupPath | None) -> list[str]:
    """The ``--wait`` summary, as systemd-run prints it."""
    from memcgctl.vocab.signals import signal_name
    from memcgctl.vocab.units import format_bytes

    if outcome.oom_killed:
        result = "oom-kill"
    elif outcome.code == "killed":
        result = "signal"
    else:
        result = "success" if outcome.detail == 0 else "exit-code"
    status = (
        f"code=exited, status={outcome.detail}"
        if outcome.code == "exited"
        else f"code=killed, status={outcome.detail}/{signal_name(outcome.detail).removeprefix('SIG')}"
    )
    lines = [
        f"Finished with result: {result}",
        f"Main process terminated with: {status}",
        f"Runtime: {outcome.runtime_s:.3f}s",
    ]
    if cg is not None:
        peak = "-" if outcome.peak_bytes is None else format_bytes(outcome.peak_bytes)
        kills = "-" if outcome.oom_kills is None else str(outcome.oom_kills)
        lines += [f"Memory peak: {peak} ({cg})", f"OOM kills: {kills}"]
    return lines


def check_root_for_uid() -> None:
    if os.geteuid() != 0:
        raise OperationFailed("--uid needs root (setuid)")


def flush_std() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
