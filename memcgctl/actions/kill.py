"""Killing single processes and whole cgroup subtrees: the :class:`Killer`.

It lists a subtree and refuses what must never be killed (the root cgroup, init,
memcgctl itself), chooses the mechanism for the target cgroup, strongest first
(``cgroup.kill``, then ``cgroup.freeze``, then the v1 ``freezer`` when it provably holds
the same processes, else ``procs`` rounds), signals one process only while it is still
in its cgroup, and runs a kill-all as phases (a signal, then SIGKILL after a grace
period) on the engines of :mod:`memcgctl.actions.killengines`, a part it builds.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from memcgctl.actions.killengines import KillEngines, Run
from memcgctl.actions.killreport import (
    CHOICES,
    FREEZE_V2,
    FREEZER_V1,
    KILL,
    PROCS,
    KillReport,
    Target,
)
from memcgctl.actions.signaller import Signaller
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.procfs import ProcFs
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import NotSupported, UsageProblem, Vanished


class Killer:
    """Kills single processes and whole subtrees of one cgroup hierarchy.

    ``freezer`` is the v1 freezer hierarchy (if mounted) for the ``freezer`` mechanism.
    """

    def __init__(
        self,
        fs: CgroupFs,
        proc: ProcFs,
        signaller: Signaller,
        freezer: CgroupFs | None = None,
        self_pid: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fs = fs
        self.proc = proc
        self.signaller = signaller
        self.freezer = freezer
        self.self_pid = os.getpid() if self_pid is None else self_pid
        self.clock = clock
        self.engines = KillEngines(fs, proc, signaller, freezer, self.self_pid, clock)

    def listing(self, top: CgroupPath) -> list[Target]:
        """The processes of top's subtree (pid, comm, cgroup, rss)."""
        return self.engines.listing(top)

    # -- membership ------------------------------------------------------------------
    def cgroup_of(self, pid: int) -> str:
        """PID's cgroup in our hierarchy, read now (raises Vanished)."""
        return self.fs.from_proc_path(self.proc.memory_cgroup(pid, self.fs.version))

    def check_not_root(self, top: CgroupPath) -> None:
        if top == "/":
            raise UsageProblem(
                f"{self.fs.mount}: refusing to kill the whole hierarchy (the root cgroup)"
            )

    def check_target(self, top: CgroupPath, targets: list[Target]) -> None:
        """Refuse what must never be done (exit 2)."""
        self.check_not_root(top)
        for t in targets:
            if t.pid == self.self_pid:
                raise UsageProblem(
                    f"{top}: memcgctl itself (pid {t.pid}) runs inside {t.cgroup}; refusing "
                    "to kill its own cgroup (run it from outside the subtree)"
                )
            if t.pid == 1:
                raise UsageProblem(f"{top}: pid 1 (init) is in {t.cgroup}; refusing")

    # -- mechanism choice ------------------------------------------------------------
    def freezer_matches(self, top: CgroupPath, pids: set[int]) -> bool:
        """The v1 freezer cgroup with the same path holds exactly the processes of the
        memcg subtree (``pids``, read just before).

        The two hierarchies cannot be read at one instant, and a fork loop changes both
        between reads, so the memcg is read again afterwards: every process the freezer
        holds must be in one of the two memcg reads, and every process in both memcg
        reads must be in the freezer.  A long-lived process in only one of them fails
        the check; a child born or reaped between the reads does not."""
        fz = self.freezer
        if fz is None or self.fs.version != 1 or not fz.exists(top):
            return False
        if fz.freezer_state(top) != "THAWED":
            return False
        try:
            frozen_side = {p for p, _ in fz.subtree_procs(top)}
            after = {p for p, _ in self.fs.subtree_procs(top)}
        except Vanished:
            return False
        return frozen_side <= (pids | after) and (pids & after) <= frozen_side

    def choose(self, top: CgroupPath, sig: int, wanted: str = "auto") -> str:
        if wanted not in CHOICES:
            raise UsageProblem(f"{wanted}: unknown mechanism (use {', '.join(CHOICES)})")
        v2 = self.fs.version == 2
        can_kill = v2 and sig == signal.SIGKILL and self.fs.has_file(top, "cgroup.kill")
        can_freeze_v2 = v2 and self.fs.has_file(top, "cgroup.freeze")
        if wanted == "procs":
            return PROCS
        if wanted == "kill":
            if not can_kill:
                why = (
                    "only sends SIGKILL"
                    if v2 and sig != signal.SIGKILL
                    else "needs cgroup v2, 5.14+"
                )
                raise NotSupported(f"{top}: the cgroup.kill mechanism {why}")
            return KILL
        if can_kill and wanted == "auto":
            return KILL
        if can_freeze_v2:
            return FREEZE_V2
        if self.fs.version == 1 and self.freezer_matches(
            top, {p for p, _ in self.fs.subtree_procs(top)}
        ):
            return FREEZER_V1
        if wanted == "freeze":
            raise NotSupported(
                f"{top}: no cgroup.freeze here, and no v1 freezer cgroup with the same path "
                "holding the same processes"
            )
        return PROCS

    # -- single processes (also used by the daemon) ------------------------------------
    def kill_process(
        self,
        pid: int,
        expected_cgroup: CgroupPath,
        sig: int = signal.SIGKILL,
        start_time: int | None = None,
        exact: bool = False,
        handle: int | None = None,
        release: bool = True,
        listed: bool = False,
    ) -> bool:
        """Signal PID only if it is (still) in ``expected_cgroup`` (or below it, unless
        ``exact``) and, when given, still has ``start_time``.  False if it was gone,
        left, or the pid now names another process.  ``handle``: one the caller opened
        on pid (with this signaller) and keeps open; otherwise one is opened here.
        ``release``: after SIGKILL, reap its memory at once (``process_mrelease``).
        ``listed``: the caller read pid in ``expected_cgroup``'s ``cgroup.procs``
        just now, after it opened ``handle``: not read again (if pid named another
        process by then, the handle's own has died and the signal goes nowhere)."""
        if pid in (1, self.self_pid):
            raise UsageProblem(f"pid {pid}: refusing to signal init or memcgctl itself")
        own = handle is None
        if handle is None:
            handle = self.signaller.open(pid)
            if handle is None:
                return False
        try:
            if not listed and not self._still_in(pid, expected_cgroup, start_time, exact):
                return False
            if not self.signaller.send(handle, sig):
                return False
            self.engines.after_send(handle, sig)
            if sig == signal.SIGKILL and release:
                self.signaller.release(handle)
            return True
        finally:
            if own:
                self.signaller.close(handle)

    def _still_in(
        self, pid: int, expected: CgroupPath, start_time: int | None, exact: bool
    ) -> bool:
        try:
            cg = self.cgroup_of(pid)
            if start_time is not None and self.proc.start_time(pid) != start_time:
                return False
        except Vanished:
            return False
        return cg == expected if exact else expected.contains(cg)

    # -- the whole subtree ------------------------------------------------------------------
    def plan(
        self,
        top: CgroupPath,
        sig: int = signal.SIGKILL,
        grace: float | None = None,
        wanted: str = "auto",
        with_comm: bool = True,
    ) -> tuple[list[Target], list[tuple[int, str]]]:
        """What kill_all would signal, and the phases (signal, mechanism) it would use.

        Raises UsageProblem for the root, init or memcgctl itself in the subtree."""
        self.check_not_root(top)
        targets = (
            self.listing(top)
            if with_comm
            else [Target(pid, "", cg) for pid, cg in self.fs.subtree_procs(top)]
        )
        self.check_target(top, targets)
        phases = [(sig, self.choose(top, sig, self._wanted_for(sig, grace, wanted)))]
        if grace is not None and sig != signal.SIGKILL:
            phases.append((signal.SIGKILL, self.choose(top, signal.SIGKILL, wanted)))
        return targets, phases

    @staticmethod
    def _wanted_for(sig: int, grace: float | None, wanted: str) -> str:
        # "--mechanism kill --grace": cgroup.kill is for the final SIGKILL phase
        if wanted == "kill" and sig != signal.SIGKILL and grace is not None:
            return "auto"
        return wanted

    def kill_all(
        self,
        top: CgroupPath,
        sig: int = signal.SIGKILL,
        timeout: float = 30.0,
        grace: float | None = None,
        wanted: str = "auto",
    ) -> KillReport:
        """Kill every task in ``top``'s subtree; return when it is empty or at timeout
        (then ``report.survivors`` names who is left).

        With ``grace`` (and a signal other than SIGKILL): send ``sig``, wait up to
        ``grace`` seconds for the subtree to empty, then SIGKILL what is left.  The
        ``timeout`` bounds the last phase, so the SIGKILL phase always has real time
        (``--signal TERM --grace 5 --timeout 3``: up to 5 s of TERM, then up to 3 s of
        KILL); without a grace phase it bounds the whole run."""
        start = self.clock()
        _, phases = self.plan(top, sig, grace, wanted, with_comm=False)
        report = KillReport(cgroup=top, signal=sig)
        run = Run(top=top, report=report)
        try:
            first_sig, first_mech = phases[0]
            graceful = len(phases) > 1 and grace is not None
            until = start + (grace if graceful and grace is not None else timeout)
            empty = self.engines.phase(run, first_sig, first_mech, until)
            if not empty and len(phases) > 1:
                # re-choose: the subtree may have changed during the grace period
                mech = self.choose(top, signal.SIGKILL, wanted)
                empty = self.engines.phase(run, signal.SIGKILL, mech, self.clock() + timeout)
        finally:
            self.engines.close_handles(run)
        report.survivors = [] if empty else self.listing(top)
        alive = {s.pid for s in report.survivors}
        report.killed = [k for pid, k in run.killed.items() if pid not in alive]
        report.elapsed_s = self.clock() - start
        return report


def make_killer(proc_root: Path, fs: CgroupFs, proc: ProcFs) -> Killer:
    """The real killer for a hierarchy: pidfds, plus the v1 freezer when mounted."""
    from memcgctl.actions.signaller import PidfdSignaller
    from memcgctl.kernel.hierarchy import find_v1_mount

    freezer = None
    if fs.version == 1:
        fz = find_v1_mount(proc_root, "freezer")
        if fz is not None:
            freezer = CgroupFs(fz)
    return Killer(fs, proc, PidfdSignaller(), freezer=freezer)
