"""Killing processes and whole cgroup subtrees, race-free against forks and pid reuse.

Mechanisms, strongest first, chosen for the target cgroup:

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
gives the victim's memory back early (best effort).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memcgctl.actions.signaller import Signaller
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.procfs import ProcFs
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import NotSupported, UsageProblem, Vanished
from memcgctl.vocab.records import UserKill, user_kill, utc_now_iso

KILL = "cgroup.kill"
FREEZE_V2 = "cgroup.freeze"
FREEZER_V1 = "freezer"
PROCS = "procs"
# one process signalled through its pidfd (the daemon's victim; not a kill-all mechanism)
PIDFD = "pidfd"
# --mechanism choices -> what they may resolve to
CHOICES = ("auto", "kill", "freeze", "procs")

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


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def parse_signal(text: str) -> int:
    """``KILL``, ``SIGKILL``, ``kill`` or ``9`` → 9."""
    t = text.strip().upper()
    if t.isascii() and t.isdigit():
        sig = int(t)
        try:
            signal.Signals(sig)
        except ValueError:
            raise UsageProblem(f"{text}: not a signal number") from None
        return sig
    name = t if t.startswith("SIG") else "SIG" + t
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageProblem(f"{text}: unknown signal") from None


@dataclass(frozen=True)
class Target:
    pid: int
    comm: str
    cgroup: CgroupPath
    rss_kb: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "comm": self.comm, "cgroup": self.cgroup, "rss_kb": self.rss_kb}


@dataclass(frozen=True)
class Killed:
    pid: int
    comm: str
    cgroup: CgroupPath
    signal: int
    mechanism: str

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "comm": self.comm,
            "cgroup": self.cgroup,
            "signal": signal_name(self.signal),
            "mechanism": self.mechanism,
        }


@dataclass
class KillReport:
    cgroup: CgroupPath
    signal: int
    phases: list[tuple[int, str]] = field(default_factory=list)
    killed: list[Killed] = field(default_factory=list)
    survivors: list[Target] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def mechanism(self) -> str:
        return self.phases[0][1] if self.phases else PROCS

    @property
    def empty(self) -> bool:
        return not self.survivors

    def to_json(self) -> dict[str, Any]:
        return {
            "cgroup": self.cgroup,
            "signal": signal_name(self.signal),
            "mechanism": self.mechanism,
            "phases": [{"signal": signal_name(s), "mechanism": m} for s, m in self.phases],
            "killed": [k.to_json() for k in self.killed],
            "survivors": [s.to_json() for s in self.survivors],
            "skipped": [{"pid": p, "reason": r} for p, r in self.skipped],
            "notes": list(self.notes),
            "empty": self.empty,
            "elapsed_s": round(self.elapsed_s, 6),
        }


def user_kill_records(
    report: KillReport, by: str = "kill-all", kind: str = "user_kill"
) -> list[UserKill]:
    """Journal records (the event keys: time, kind, cgroup, source, pid, comm, ...) for
    the processes a kill-all killed: ``user_kill`` when the target was under OOM
    (counted as ``user``), ``manual_kill`` for a healthy cgroup torn down (counted
    nowhere)."""
    now = utc_now_iso()
    return [
        user_kill(
            time=now,
            kind=kind,
            cgroup=k.cgroup,
            pid=k.pid,
            comm=k.comm,
            signal=signal_name(k.signal),
            mechanism=k.mechanism,
            target=report.cgroup,
            by=by,
        )
        for k in report.killed
    ]


@dataclass
class _Run:
    top: CgroupPath
    handles: dict[int, int] = field(default_factory=dict)  # pid -> handle, this phase
    exited: set[int] = field(default_factory=set)  # handles seen exited
    killed: dict[int, Killed] = field(default_factory=dict)
    to_release: list[int] = field(default_factory=list)  # handles to reap after a thaw
    report: KillReport | None = None


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

    # -- membership ------------------------------------------------------------------
    def cgroup_of(self, pid: int) -> str:
        """PID's cgroup in our hierarchy, read now (raises Vanished)."""
        return self.fs.from_proc_path(self.proc.memory_cgroup(pid, self.fs.version))

    def listing(self, top: CgroupPath) -> list[Target]:
        out = []
        for pid, cg in self.fs.subtree_procs(top):
            try:
                comm, rss_kb = self.proc.comm_and_rss_kb(pid)
            except (Vanished, ValueError, IndexError):
                continue
            out.append(Target(pid, comm, cg, rss_kb))
        return out

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
    ) -> bool:
        """Signal PID only if it is (still) in ``expected_cgroup`` (or below it, unless
        ``exact``) and, when given, still has ``start_time``.  False if it was gone,
        left, or the pid now names another process."""
        if pid in (1, self.self_pid):
            raise UsageProblem(f"pid {pid}: refusing to signal init or memcgctl itself")
        handle = self.signaller.open(pid)
        if handle is None:
            return False
        try:
            try:
                cg = self.cgroup_of(pid)
                if start_time is not None and self.proc.start_time(pid) != start_time:
                    return False
            except Vanished:
                return False
            if not (cg == expected_cgroup if exact else expected_cgroup.contains(cg)):
                return False
            if not self.signaller.send(handle, sig):
                return False
            self._after_send(handle, sig)
            if sig == signal.SIGKILL:
                self.signaller.release(handle)
            return True
        finally:
            self.signaller.close(handle)

    def _after_send(self, handle: int, sig: int) -> None:
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
        self, run: _Run, pids: list[int], sig: int, mechanism: str, release: bool = True
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
                self._after_send(handle, sig)
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

    def _close_handles(self, run: _Run) -> None:
        for handle in run.handles.values():
            self.signaller.close(handle)
        run.handles.clear()
        run.exited.clear()

    # -- mechanisms ---------------------------------------------------------------------
    def _rounds(self, run: _Run, sig: int, until: float) -> bool:
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

    def _via_kill(self, run: _Run, until: float) -> bool:
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

    def _via_freeze_v2(self, run: _Run, sig: int, until: float) -> bool:
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

    def _via_freezer_v1(self, run: _Run, sig: int, until: float) -> bool:
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

    def _phase(self, run: _Run, sig: int, mechanism: str, until: float) -> bool:
        assert run.report is not None
        run.report.phases.append((sig, mechanism))
        self._close_handles(run)
        if mechanism == KILL:
            return self._via_kill(run, until)
        if mechanism == FREEZE_V2:
            self._via_freeze_v2(run, sig, until)
        elif mechanism == FREEZER_V1:
            self._via_freezer_v1(run, sig, until)
        # after a frozen pass, rounds only catch stragglers (e.g. children that a
        # TERM handler forks); without a freezer they do all the work
        return self._rounds(run, sig, until)

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
        run = _Run(top=top, report=report)
        try:
            first_sig, first_mech = phases[0]
            graceful = len(phases) > 1 and grace is not None
            until = start + (grace if graceful and grace is not None else timeout)
            empty = self._phase(run, first_sig, first_mech, until)
            if not empty and len(phases) > 1:
                # re-choose: the subtree may have changed during the grace period
                mech = self.choose(top, signal.SIGKILL, wanted)
                empty = self._phase(run, signal.SIGKILL, mech, self.clock() + timeout)
        finally:
            self._close_handles(run)
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
