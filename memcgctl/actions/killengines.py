"""The per-mechanism engines of a kill-all, race-free against forks and pid reuse.

* ``cgroup.kill`` (v2, 5.14+, SIGKILL only): the kernel kills the whole subtree,
  including forks racing with it; we wait for ``populated 0`` in ``cgroup.events``.
* ``cgroup.freeze`` (v2): freeze the subtree, wait for ``frozen 1``, signal every task
  (nothing can fork meanwhile), thaw.
* ``freezer`` (v1): the same with the v1 freezer hierarchy, used only when the freezer
  cgroup with the same path provably holds the same processes as the memcg subtree.
* ``procs``: rounds of signalling over ``cgroup.procs`` of the whole subtree until it is
  empty, catching children forked in between.

Every signal we send goes through a pidfd opened *before* re-checking that the process
is still in the subtree: if the pid is recycled after the check, the pidfd still names
the old (dead) process and the signal goes nowhere.  After SIGKILL, ``process_mrelease``
gives the victim's memory back early (best effort).  :class:`KillEngines` is the part of
:class:`~memcgctl.actions.kill.Killer` that runs one phase; the killer chooses the
mechanism and the phases.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

from memcgctl.actions.killreport import (
    FREEZE_V2,
    FREEZER_V1,
    KILL,
    PROCS,
    Killed,
    KillReport,
    Target,
)
from memcgctl.actions.signaller import Signaller
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.procfs import ProcFs
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import Vanished
from memcgctl.vocab.signals import signal_name
from memcgctl.vocab.structs import dataclass, field

# How long a freeze may take before we give up on it and fall back to rounds.
FREEZE_WAIT_S = 2.0
# Rounds: how long to wait for signalled processes to exit before listing again (new
# forks are only seen by listing).
ROUND_WAIT_S = 0.005
# cgroup.kill: re-write it this often while the subtree stays populated (kernels before
# 6.14 could let a racing fork escape).
KILL_REWRITE_S = 0.5
# process_mrelease only victims at least this big: reaping a small process from our one
# thread is slower than letting the dying processes free their own memory in parallel.
MRELEASE_MIN_RSS_KB = 32 << 10
# Signals after which a stopped process also needs SIGCONT to act on them.
_NO_CONT = frozenset(
    {signal.SIGKILL, signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCONT}
)


@dataclass
class Run:
    """One kill-all in progress: the handles pinned this phase, who was signalled, what
    to reap after a thaw, and the report being filled."""

    top: CgroupPath
    handles: dict[int, int] = field(default_factory=dict)  # pid -> handle, this phase
    exited: set[int] = field(default_factory=set)  # handles seen exited
    killed: dict[int, Killed] = field(default_factory=dict)
    to_release: list[int] = field(default_factory=list)  # handles to reap after a thaw
    report: KillReport | None = None


class KillEngines:
    """The engines behind :class:`~memcgctl.actions.kill.Killer`: the subtree listing,
    signalling through pinned handles, and one phase per mechanism.  ``freezer`` is the
    v1 freezer hierarchy (if mounted); ``self_pid`` is never signalled."""

    def __init__(
        self,
        fs: CgroupFs,
        proc: ProcFs,
        signaller: Signaller,
        freezer: CgroupFs | None,
        self_pid: int,
        clock: Callable[[], float],
    ) -> None:
        self.fs = fs
        self.proc = proc
        self.signaller = signaller
        self.freezer = freezer
        self.self_pid = self_pid
        self.clock = clock

    def listing(self, top: CgroupPath) -> list[Target]:
        out = []
        for pid, cg in self.fs.subtree_procs(top):
            try:
                comm, rss_kb = self.proc.comm_and_rss_kb(pid)
            except (Vanished, ValueError, IndexError):
                continue
            out.append(Target(pid, comm, cg, rss_kb))
        return out

    def after_send(self, handle: int, sig: int) -> None:
        if sig not in _NO_CONT:
            self.signaller.send(handle, signal.SIGCONT)  # a stopped task must run to die

    def _release(self, handles: list[int]) -> None:
        """process_mrelease the SIGKILLed processes that have not exited yet.  Done
        after a whole round is signalled, so that every victim is already dying while
        we reap (reaping first would delay the signals to the rest).  Callers pass only
        victims of at least MRELEASE_MIN_RSS_KB."""
        for handle in handles:
            if not self.signaller.exited(handle):
                self.signaller.release(handle)

    def _signal_batch(
        self, run: Run, pids: list[int], sig: int, mechanism: str, release: bool = True
    ) -> list[int]:
        """Signal these processes of the subtree, race-free against pid reuse.

        1. Pin every pid with a pidfd.  2. Re-read the subtree's cgroup.procs (one read
        per cgroup, not one /proc read per pid).  3. Signal through the pidfd only the
        pids still listed.  A pid listed in step 2 is either the pinned process (still
        in the subtree) or, if that one died and the pid was reused, the pidfd names a
        dead process and the signal goes nowhere: nobody outside is ever hit.
        Returns the handles of the processes signalled (kept in ``run.handles``).
        """
        assert run.report is not None
        pinned: list[tuple[int, int]] = []
        for pid in pids:
            if pid in (1, self.self_pid):
                run.report.skipped.append((pid, "protected (init or memcgctl itself)"))
                continue
            handle = self.signaller.open(pid)
            if handle is not None:
                pinned.append((pid, handle))
        if not pinned:
            return []
        try:
            members = dict(self.fs.subtree_procs(run.top))
        except Vanished:
            members = {}
        sent: list[int] = []
        big: list[int] = []
        for pid, handle in pinned:
            keep = False
            try:
                cg = members.get(pid)
                if cg is None:
                    run.report.skipped.append((pid, "left the subtree before it was signalled"))
                    continue
                try:
                    comm, rss_kb = self.proc.comm_and_rss_kb(pid)
                except (Vanished, ValueError, IndexError):
                    continue
                if not self.signaller.send(handle, sig):
                    continue
                self.after_send(handle, sig)
                run.handles[pid] = handle
                run.killed[pid] = Killed(pid, comm, cg, sig, mechanism)
                sent.append(handle)
                if rss_kb >= MRELEASE_MIN_RSS_KB:
                    big.append(handle)
                keep = True
            finally:
                if not keep:
                    self.signaller.close(handle)
        if sig == signal.SIGKILL:
            if release:
                self._release(big)
            else:
                run.to_release.extend(big)
        return sent

    def close_handles(self, run: Run) -> None:
        for handle in run.handles.values():
            self.signaller.close(handle)
        run.handles.clear()
        run.exited.clear()

    # -- mechanisms ---------------------------------------------------------------------
    def _rounds(self, run: Run, sig: int, until: float) -> bool:
        """Signal every listed process not yet signalled, until the subtree is empty."""
        while True:
            try:
                listed = self.fs.subtree_procs(run.top)
            except Vanished:
                return True
            if not listed:
                return True
            fresh: list[int] = []
            for pid, _ in listed:
                handle = run.handles.get(pid)
                if handle is not None:
                    if handle not in run.exited and not self.signaller.exited(handle):
                        continue  # signalled, still dying
                    # exited but listed again: the pid was recycled inside the subtree
                    self.signaller.close(handle)
                    run.exited.discard(handle)
                    del run.handles[pid]
                fresh.append(pid)
            sent = self._signal_batch(run, fresh, sig, PROCS)
            now = self.clock()
            if now >= until:
                return False
            if not sent:
                pending = [h for h in run.handles.values() if h not in run.exited]
                run.exited |= self.signaller.wait(pending, min(ROUND_WAIT_S, until - now))

    def _via_kill(self, run: Run, until: float) -> bool:
        assert run.report is not None
        targets = self.listing(run.top)
        handles = []
        for t in targets:
            if t.rss_kb >= MRELEASE_MIN_RSS_KB:  # pin big ones, to reap them early
                h = self.signaller.open(t.pid)
                if h is not None:
                    handles.append(h)
            run.killed[t.pid] = Killed(t.pid, t.comm, t.cgroup, signal.SIGKILL, KILL)
        try:
            self.fs.kill(run.top)
            self._release(handles)
        finally:
            for h in handles:
                self.signaller.close(h)
        while True:
            remaining = until - self.clock()
            if self.fs.wait_cgroup_event(
                run.top, "populated", 0, max(0.0, min(KILL_REWRITE_S, remaining))
            ):
                return True
            if self.clock() >= until:
                return False
            self.fs.kill(run.top)  # a fork that raced with it (kernels before 6.14)

    def _via_freeze_v2(self, run: Run, sig: int, until: float) -> bool:
        """Freeze, signal all, thaw.  False if it did not freeze in time (rounds follow)."""
        assert run.report is not None
        top = run.top
        was_frozen = bool(self.fs.freeze_value(top))
        if not was_frozen:
            self.fs.set_freeze(top, True)
        try:
            wait = max(0.0, min(FREEZE_WAIT_S, until - self.clock()))
            if not self.fs.wait_cgroup_event(top, "frozen", 1, wait):
                run.report.notes.append(
                    f"{top} did not freeze within {wait:.1f}s; signalling in rounds instead"
                )
                return False
            pids = [pid for pid, _ in self.fs.subtree_procs(top)]
            # reap after the thaw: the victims exit in parallel meanwhile
            self._signal_batch(run, pids, sig, FREEZE_V2, release=False)
        finally:
            if not was_frozen:
                self.fs.set_freeze(top, False)
            elif sig != signal.SIGKILL:
                run.report.notes.append(
                    f"{top} was frozen before (cgroup.freeze 1) and stays frozen: "
                    f"{signal_name(sig)} is delivered only when it is thawed"
                )
        self._release(run.to_release)
        run.to_release.clear()
        return True

    def _via_freezer_v1(self, run: Run, sig: int, until: float) -> bool:
        """The v1 freezer, with the same path, holding the same processes."""
        assert run.report is not None and self.freezer is not None
        fz, top = self.freezer, run.top
        fz.set_freezer_state(top, "FROZEN")
        try:
            # v1 has no freeze notification: check the state with short sleeps
            give_up = min(until, self.clock() + FREEZE_WAIT_S)
            while fz.freezer_state(top) != "FROZEN":
                if self.clock() >= give_up:
                    run.report.notes.append(
                        f"freezer {top} did not freeze in time; signalling in rounds instead"
                    )
                    return False
                time.sleep(0.001)
            mem = {p for p, _ in self.fs.subtree_procs(top)}
            if {p for p, _ in fz.subtree_procs(top)} != mem:
                run.report.notes.append(
                    f"freezer {top} no longer holds the same processes as the memcg; "
                    "signalling in rounds instead"
                )
                return False
            self._signal_batch(run, sorted(mem), sig, FREEZER_V1, release=False)
        finally:
            fz.set_freezer_state(top, "THAWED")
        self._release(run.to_release)
        run.to_release.clear()
        return True

    def phase(self, run: Run, sig: int, mechanism: str, until: float) -> bool:
        assert run.report is not None
        run.report.phases.append((sig, mechanism))
        self.close_handles(run)
        if mechanism == KILL:
            return self._via_kill(run, until)
        if mechanism == FREEZE_V2:
            self._via_freeze_v2(run, sig, until)
        elif mechanism == FREEZER_V1:
            self._via_freezer_v1(run, sig, until)
        # after a frozen pass, rounds only catch stragglers (e.g. children that a
        # TERM handler forks); without a freezer they do all the work
        return self._rounds(run, sig, until)
