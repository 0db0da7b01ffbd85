"""``daemon --pre-kill CMD`` / ``--post-kill CMD``: commands the daemon runs around a
kill (earlyoom's ``-P``/``-N``, systemd-oomd's prekill hook).

A hook never delays a kill: it runs in the background (``/bin/sh -c CMD`` in a session
of its own), the daemon never waits for it, and one still running when its time is up
is killed with its whole process group.  The pre-kill hook starts when the victim is
chosen, ahead of the kill's deadline, and its time is the lesser of ``timeout`` and what
is left until that deadline: at the deadline the victim dies whether the hook is done or
not.  A victim chosen with no time left (OOM delay 0, or chosen again at the deadline)
gets no pre-kill hook (``hook_skipped``).  The post-kill hook starts right after the
signal and has ``timeout``.

Environment: ``MEMCGCTL_HOOK`` (pre-kill | post-kill), ``MEMCGCTL_VICTIM_PID``,
``MEMCGCTL_VICTIM_COMM``, ``MEMCGCTL_VICTIM_CGROUP``, ``MEMCGCTL_VICTIM_BADNESS``,
``MEMCGCTL_OOM_CGROUP`` (the managed memcg), ``MEMCGCTL_DEADLINE_MS`` (pre-kill: ms
until the kill), ``MEMCGCTL_KILLED_PIDS`` (post-kill: space-separated).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

from memcgctl.logic.decision import Decision
from memcgctl.vocab.cgpath import Scope
from memcgctl.vocab.structs import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:  # loaded by Hooks(): a daemon without hooks keeps it out of memory
    import subprocess

Emit = Callable[..., None]  # (kind, cgroup, **fields)
PRE, POST = "pre-kill", "post-kill"


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    kind: str
    cg: Scope
    victim: int
    deadline: float
    started: float


@dataclass
class Hooks:
    pre: str | None
    post: str | None
    timeout: float
    emit: Emit
    clock: Callable[[], float] = time.monotonic
    running: list[_Running] = field(default_factory=list)
    started_for: set[int] = field(default_factory=set)  # victims whose pre-kill hook ran

    def __post_init__(self) -> None:
        import subprocess  # now, never first in the middle of an OOM

        self._subprocess = subprocess

    @property
    def lead_s(self) -> float:
        """How long before a kill's deadline the victim should be chosen (the core's
        plan): the pre-kill hook's time."""
        return self.timeout if self.pre else 0.0

    def _env(self, kind: str, cg: Scope, decision: Decision, **extra: str) -> dict[str, str]:
        v = decision.victim
        assert v is not None
        env = dict(os.environ)
        env.update(
            MEMCGCTL_HOOK=kind,
            MEMCGCTL_VICTIM_PID=str(v.pid),
            MEMCGCTL_VICTIM_COMM=v.comm,
            MEMCGCTL_VICTIM_CGROUP=str(v.cgroup),
            MEMCGCTL_VICTIM_BADNESS=str(v.badness),
            MEMCGCTL_OOM_CGROUP=str(cg),
            **extra,
        )
        return env

    def _start(
        self, kind: str, cmd: str, cg: Scope, decision: Decision, budget: float, **extra: str
    ) -> None:
        v = decision.victim
        assert v is not None
        now = self.clock()
        try:
            proc = self._subprocess.Popen(
                ["/bin/sh", "-c", cmd],
                env=self._env(kind, cg, decision, **extra),
                stdin=self._subprocess.DEVNULL,
                stdout=self._subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self.emit("hook_failed", cg, hook=kind, pid=v.pid, error=str(exc))
            return
        self.running.append(_Running(proc, kind, cg, v.pid, now + budget, now))
        self.emit(
            "hook_started",
            cg,
            hook=kind,
            pid=v.pid,
            hook_pid=proc.pid,
            budget_ms=round(budget * 1000),
        )

    def chosen(self, cg: Scope, decision: Decision, deadline: float) -> None:
        """The victim of the coming kill is known (the core's plan): start the pre-kill
        hook with the time left until ``deadline`` (at most ``timeout``)."""
        v = decision.victim
        if not self.pre or v is None or v.pid in self.started_for:
            return
        left = deadline - self.clock()
        if left <= 0:
            return
        self.started_for.add(v.pid)
        self._start(
            PRE,
            self.pre,
            cg,
            decision,
            min(self.timeout, left),
            MEMCGCTL_DEADLINE_MS=str(int(left * 1000)),
        )

    def killing(self, cg: Scope, decision: Decision) -> None:
        """At the deadline, before the signal: a pre-kill hook still running for this
        victim is out of time (killed); one that never started is skipped.  Never
        waits."""
        v = decision.victim
        if not self.pre or v is None:
            return
        if v.pid not in self.started_for:
            self.emit("hook_skipped", cg, hook=PRE, pid=v.pid, reason="no time before the kill")
        for r in list(self.running):
            if r.kind == PRE and r.victim == v.pid and r.proc.poll() is None:
                self._stop(r, "deadline")

    def killed(self, cg: Scope, decision: Decision, pids: list[int]) -> None:
        self.started_for.discard(decision.victim.pid if decision.victim else -1)
        if self.post and decision.victim is not None and pids:
            self._start(
                POST,
                self.post,
                cg,
                decision,
                self.timeout,
                MEMCGCTL_KILLED_PIDS=" ".join(map(str, pids)),
            )

    def _stop(self, r: _Running, why: str) -> None:
        with contextlib.suppress(OSError):
            os.killpg(r.proc.pid, signal.SIGKILL)  # its session: the hook's children too
        with contextlib.suppress(self._subprocess.TimeoutExpired, OSError):
            r.proc.wait(timeout=0.05)
        self.running.remove(r)
        self.emit(
            "hook_timeout",
            r.cg,
            hook=r.kind,
            pid=r.victim,
            hook_pid=r.proc.pid,
            reason=why,
            after_ms=round((self.clock() - r.started) * 1000),
        )

    def reap(self) -> float | None:
        """Collect finished hooks, stop those out of time; the next hook deadline."""
        now = self.clock()
        for r in list(self.running):
            code = r.proc.poll()
            if code is not None:
                self.running.remove(r)
                self.emit(
                    "hook_done",
                    r.cg,
                    hook=r.kind,
                    pid=r.victim,
                    hook_pid=r.proc.pid,
                    exit=code,
                    after_ms=round((now - r.started) * 1000),
                )
            elif now >= r.deadline:
                self._stop(r, "timeout")
        return min((r.deadline for r in self.running), default=None)

    def close(self) -> None:
        for r in list(self.running):
            self._stop(r, "daemon stopping")
