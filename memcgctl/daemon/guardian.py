"""The guardian's watch over its daemon, and the daemon's half of it: the heartbeat.

Without systemd, a small guardian process outlives the daemon and releases its marks
(``daemon --guard``).  Its resident part is a bash watcher when the daemon finds bash
(:mod:`~memcgctl.daemon.guardwatch`: it reads a pipe :meth:`Heartbeat.beat` writes a
byte to, and keeps the timings below); this module's Python guardian is the fallback
without bash, and the home of the timings and the daemon's :class:`Heartbeat`.

It must notice not only a dead daemon but one that no longer acts: **stopped**
(SIGSTOP, state ``T`` in ``/proc/PID/stat``) or **hung** (its main loop, once running,
has not touched its heartbeat file for :data:`STALE_S`; a tracer's stop, state ``t``,
counts only through the heartbeat).

When it releases a stopped or hung daemon's marks it leaves a *released* note beside
the heartbeat; a daemon that comes back (SIGCONT) finds it, forgets what it held and
takes its memcgs over afresh, so nothing is killed twice.

**It sleeps until something can have happened** (issue 22: idle CPU is paid per Python
wake-up).  Death arrives at once, through a pidfd.  A stop or a hang shows only as a
heartbeat that stops moving, so the guardian sleeps until the last beat could first be
stale (heartbeat mtime + :data:`STALE_S`), looks, and sleeps again: about one look per
``STALE_S - BEAT_S`` (1.5 s) while the daemon is well, against four a second before.
Before the daemon's first beat (mtime 0: its first rescan) it looks every
:data:`START_POLL_S` for the stopped state.  The bound this keeps, a paused memcg never
stays paused longer than its delay + 3 s:

* the daemon's loop beats every :data:`BEAT_S` (1 s), on a wake-up it has anyway once
  the last beat is :data:`EARLY_S` (0.8 s) old, else on one of its own: at most 1.25
  beats a second (each one wakes the bash watcher), and its poll timeout is the
  next beat, or a wake-up due at most :data:`PULSE_SLACK_S` after it (a rescan, whose
  start drifts by its own length); a long rescan walk beats as it goes, and so does a
  choice that reads many cgroups (a tenant's thousands, issue 22).  A busy turn of
  the loop (a decision under emulation: ≤ 0.7 s) thus stays ``STALE_S - BEAT_S -
  PULSE_SLACK_S`` = 1.3 s clear of being taken for a hang;
* the heartbeat is stale ``STALE_S`` after the last beat, so at most ``STALE_S`` = 2.5 s
  after a stop or a hang, and the guardian is awake then (it slept until exactly then,
  to the millisecond; a look that finds a newer beat sleeps until that one's stale time);
* then the release (:mod:`~memcgctl.daemon.guardrelease`: only what restoring needs,
  6 ms of imports here).  An OOM that began at the stop (the worst case) is released
  ``STALE_S`` + the release after it: 2.6 s here, within its delay + 3 s for any delay.
  Under emulation the release is slower: in the v2 guest
  (tests/v2/test_daemon_hardening_v2.py, SIGSTOP right after ``under_oom``, delay 2 s)
  released 2.6 s after ``under_oom`` (3.5 s while the release imported the whole
  ``daemon.main``), so there the bound holds for a delay of about 0.5 s and more.  A hang
  was seen this late before too (``STALE_S`` + the 0.25 s look + the release).
* the bash watcher (:mod:`~memcgctl.daemon.guardwatch`) keeps the same timings, the
  stale time counted from the last byte on its pipe, and starts an interpreter for
  the release, which the Python guardian had running: on the host 0.01 s more
  (bench/guardian_bench.py: SIGSTOP after ``under_oom`` → released 2.53 s p50 against
  2.51, a SIGKILL → released 0.05 s either way); in the v2 guest a bare ``python3 -S``
  starts in 0.35 s, the release command line takes 1.40 s against the Python
  guardian's 0.98 s in its process, and SIGSTOP after ``under_oom`` → released is
  3.90 s p50 (max 3.95) against 3.00 (max 3.54), a SIGKILL → released 1.49 s against
  1.13: under emulation the bound holds for a delay of about 1 s and more.

Light on purpose: the standard library's ``os``, ``select`` and ``time``, nothing else
(``contextlib`` alone, with the ``collections`` and ``functools`` it loads, was 0.8 MiB).
The guardian process runs :func:`main` in an interpreter started with ``-S`` (:func:`argv`):
no ``site``, so none of the host's ``.pth`` hooks either (one that imported ``certifi``
cost 3 MiB), and the daemon's ``sys.path`` handed over so that it finds memcgctl (and
what a release imports) where the daemon did.  While the daemon is well only these stay
resident beside it: 8.7 MiB RSS, a bare ``python3 -S -c pass`` 8.5 (measured on the
host, bench/footprint_bench.py; it was 9.6 with ``-m`` and ``site``, 22 MiB for the
whole command line); the machinery that restores marks is imported only when it must act.
"""

from __future__ import annotations

import os
import select
import sys
import time

TYPE_CHECKING = False  # (typing and collections.abc at run time: 0.4+ MiB for two hints)
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

BEAT_S = 1.0  # the daemon touches its heartbeat at least this often
# and on any wake-up it has anyway once the last beat is this old: a beat rides on a
# wake-up up to PULSE_SLACK_S before (or after) its time, no more often (issue 22: at
# BEAT_S / 2 a look every 0.57 s beat at each, and each beat wakes the bash watcher)
EARLY_S = 0.8 * BEAT_S
PULSE_SLACK_S = 0.2  # a beat may wait this much longer for a wake-up the loop has anyway
STALE_S = 2.5  # a heartbeat older than this: hung (or stopped, if its state is T)
START_POLL_S = 0.5  # before the first beat: look this often for the stopped state
STOPPED_POLLS = 2  # then seen stopped this many times in a row: stopped (not a passing ^Z)
BACK_POLL_S = 0.25  # after a release: look this often for the daemon running again
STALE_SLACK_S = 0.005  # wake this much after the stale time (mtime and clock granularity)

DIED, STOPPED, HUNG, RUNNING = "died", "stopped", "hung", "running"


def heartbeat_path(state_dir: str, pid: int) -> str:
    return os.path.join(state_dir, f"daemon-{pid}.heartbeat")


def released_path(state_dir: str, pid: int) -> str:
    return os.path.join(state_dir, f"daemon-{pid}.released")


def _stat_fields(proc_root: str, pid: int) -> list[str] | None:
    """/proc/PID/stat after the comm (which may hold spaces and parentheses)."""
    try:
        fd = os.open(f"{proc_root}/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data[data.rfind(b")") + 1 :].decode("ascii", "replace").split()


def look(proc_root: str, pid: int, start_time: int, heartbeat: str) -> str:
    """The daemon's state now: DIED (gone, or the pid is another process's), STOPPED
    (state T), HUNG (heartbeat stale or missing) or RUNNING."""
    state, stale, _ = _look(proc_root, pid, start_time, heartbeat)
    return HUNG if state == RUNNING and stale else state


def _look(proc_root: str, pid: int, start_time: int, heartbeat: str) -> tuple[str, bool, float]:
    """(DIED, STOPPED or RUNNING; whether the heartbeat is stale or missing; seconds
    until it goes stale: 0 when it is, -1 before the first beat)."""
    fields = _stat_fields(proc_root, pid)
    # field 3 is the state, field 22 the start time: [0] and [19] after the comm
    if fields is None or len(fields) < 20 or fields[19] != str(start_time):
        return DIED, True, 0.0
    if fields[0] in ("Z", "X"):
        return DIED, True, 0.0
    # "T": SIGSTOP; not "t", a tracer's stop (strace, gdb): that shows by the heartbeat
    state = STOPPED if fields[0] == "T" else RUNNING
    try:
        mtime = os.stat(heartbeat).st_mtime
    except OSError:
        return state, True, 0.0
    if mtime == 0:  # starting: its loop has not beaten yet
        return state, False, -1.0
    left = mtime + STALE_S - time.time()
    return (state, True, 0.0) if left < 0 else (state, False, left)


def watch(proc_root: str, pid: int, start_time: int, heartbeat: str, pidfd: int) -> str:
    """Block until the daemon died, is stopped, or hung; say which.  Sleeps until the
    heartbeat could first be stale (the pidfd wakes it at a death)."""
    stopped = 0
    poller = select.poll()
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)  # readable the moment it exits
    while True:
        state, stale, left = _look(proc_root, pid, start_time, heartbeat)
        if state == DIED:
            return DIED
        if stale:  # silent for STALE_S: stopped if its state says so, else hung
            return STOPPED if state == STOPPED else HUNG
        # not beating yet (or a wall clock stepped back): the stopped state, seen twice
        stopped = stopped + 1 if state == STOPPED else 0
        if stopped >= STOPPED_POLLS:
            return STOPPED
        # a clock stepped back must not blind it for longer than STALE_S
        sleep = START_POLL_S if left < 0 else min(left, STALE_S) + STALE_SLACK_S
        if poller.poll(int(sleep * 1000) + 1):
            return DIED


def wait_back(proc_root: str, pid: int, start_time: int, heartbeat: str, pidfd: int) -> str:
    """After a release: block until the daemon runs again (RUNNING) or died."""
    poller = select.poll()
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    while True:
        state = look(proc_root, pid, start_time, heartbeat)
        if state in (DIED, RUNNING):
            return state
        if poller.poll(int(BACK_POLL_S * 1000)):
            return DIED


class Heartbeat:
    """The daemon's half: touch the heartbeat file from the main loop, and notice the
    guardian's *released* note."""

    def __init__(self, state_dir: str, pid: int) -> None:
        self.path = heartbeat_path(state_dir, pid)
        self.released_note = released_path(state_dir, pid)
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        self.fd = os.open(self.path, flags, 0o600)
        os.utime(self.fd, (0, 0))  # not beating yet (the first rescan may take a while)
        self._next = 0.0
        self._pipe = -1  # the write end of the bash watcher's pipe (daemon/guardwatch.py)

    def pipe(self) -> int:
        """A pipe for the bash watcher: each beat writes a byte to it.  We keep the
        write end (close-on-exec: no hook or other child inherits it, so its end of
        file means we are gone; non-blocking: a full pipe costs no beat); the read end
        is returned (close-on-exec, blocking) for the caller to hand over and close."""
        r, w = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(w, False)
        self.unpipe()
        self._pipe = w
        return r

    def unpipe(self) -> None:
        """No watcher reads the pipe (it could not start): beat the file alone."""
        if self._pipe >= 0:
            os.close(self._pipe)
            self._pipe = -1

    def beat(self, now: float, force: bool = False) -> float:
        """Touch if due, or on this wake-up the loop has anyway if the last beat is
        :data:`EARLY_S` old (a utime is cheap, a wake-up of its own is not); when to be
        called again at the latest: the loop sleeps no longer (``now``: its clock)."""
        if force or now >= self._next - (BEAT_S - EARLY_S):
            try:  # noqa: SIM105 - (contextlib: 0.8 MiB in the guardian)
                os.utime(self.fd)  # the Python guardian's (and anyone's) sign of life
            except OSError:
                pass
            if self._pipe >= 0:
                try:  # noqa: SIM105
                    os.write(self._pipe, b".")  # the bash watcher's; full: EAGAIN, no matter
                except OSError:
                    pass
            self._next = now + BEAT_S
        return self._next

    def released(self) -> bool:
        """True once after the guardian released our marks (we were stopped or hung)."""
        try:
            os.unlink(self.released_note)
        except OSError:
            return False
        return True

    def close(self) -> None:
        # the pipe stays open until we exit: its end of file tells the watcher we are
        # gone, and this daemon still has marks to restore and its claim to remove
        os.close(self.fd)
        _unlink(self.path, self.released_note)


def serve(instance: str, proc_root: str, state_dir: str, release: Callable[[str], None]) -> None:
    """The guardian's life: watch the daemon ``instance`` (``BOOT/PID/STARTTIME``) until
    it dies.  ``release(state)`` puts its marks back: with STOPPED or HUNG those of the
    living instance (the daemon is then told, by the *released* note, and the guardian
    waits for it to run again), with DIED at the end every mark and its claim."""
    parts = instance.split("/")
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"{instance!r}: not an instance id")
    pid, start = int(parts[1]), int(parts[2])
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        fd = -1
    heartbeat = heartbeat_path(state_dir, pid)
    try:
        while fd >= 0:  # the pidfd is the daemon's: look() checks the start time
            state = watch(proc_root, pid, start, heartbeat, fd)
            if state == DIED:
                break
            release(state)
            try:
                flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
                os.close(os.open(released_path(state_dir, pid), flags, 0o600))
            except OSError:
                pass
            if wait_back(proc_root, pid, start, heartbeat, fd) == DIED:
                break
    finally:
        if fd >= 0:
            os.close(fd)
    release(DIED)
    _unlink(heartbeat, released_path(state_dir, pid))


def _unlink(*paths: str) -> None:
    for path in paths:
        try:  # noqa: SIM105 - (contextlib: 0.8 MiB in the guardian)
            os.unlink(path)
        except OSError:
            pass


def argv(
    executable: str, proc_root: str, cgroup_root: str, state_dir: str, root: str, instance: str
) -> list[str]:
    """The guardian's command line (:func:`light_argv` running :func:`main`)."""
    args = [proc_root, cgroup_root, state_dir, root, instance]
    return light_argv(executable, "memcgctl.daemon.guardian", "main", args)


# ``python3 -S -c ENTRY N PATH... ARGS...``: sys.path becomes the N paths, then
# sys.exit(MODULE.FUNCTION(ARGS))
_ENTRY = (
    "import sys;n=int(sys.argv[1]);sys.path[:]=sys.argv[2:n+2];del sys.argv[1:n+2];"
    "from {module} import {function};sys.exit({function}(sys.argv[1:]))"
)


def light_argv(executable: str, module: str, function: str, args: Sequence[str]) -> list[str]:
    """A command line that runs ``module.function(args)`` in this interpreter without
    ``site`` (``-S``: neither its imports nor a host's ``.pth`` hooks), with this
    process's ``sys.path`` (so it finds memcgctl, and what it imports later, where this
    process did) and its ``-I``/``-E``."""
    flags = sys.flags
    opts = ["-I"] if flags.isolated else ["-E"] if flags.ignore_environment else []
    code = _ENTRY.format(module=module, function=function)
    path = list(sys.path)
    # the directory that holds this memcgctl, when an import hook found it (an editable
    # install's .pth) rather than sys.path; not moved forward when it is on the path
    # (site-packages before the standard library would shadow it with any backport)
    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if home not in (os.path.abspath(p) for p in path):
        path.insert(0, home)
    return [executable, *opts, "-S", "-c", code, str(len(path)), *path, *args]


def main(args: Sequence[str]) -> int:
    """The guardian process: ``PROC_ROOT CGROUP_ROOT STATE_DIR ROOT INSTANCE``
    (``CGROUP_ROOT`` empty: the hierarchy mounted), started by :func:`argv`; also
    ``python3 -m memcgctl.daemon.guardian`` (as earlier daemons started it)."""
    if len(args) != 5:
        _error("want PROC_ROOT CGROUP_ROOT STATE_DIR ROOT INSTANCE")
        return 2
    proc_root, cgroup_root, state_dir, root, instance = args

    def release(state: str) -> None:
        from memcgctl.daemon.guardrelease import guardian_release  # only now: it acts

        guardian_release(proc_root, cgroup_root, state_dir, root, instance, state)

    try:
        serve(instance, proc_root, state_dir, release)
    except ValueError as exc:
        _error(str(exc))
        return 2
    return 0


def _error(text: str) -> None:
    from memcgctl.render.logprio import Priority, prefixed  # only on this path

    os.write(2, (prefixed(Priority.ERR, f"guardian: {text}") + "\n").encode())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
