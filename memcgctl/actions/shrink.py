"""Lowering a memory limit below the usage without letting the kernel choose the victim.

The kernel's own behaviour (mm/memcontrol.c): on v2, writing ``memory.max`` below
``memory.current`` reclaims a few rounds and then runs the OOM killer *inside the
write* until the usage fits — the kernel's heuristic picks (the biggest task), not
the priority policy.  On v1, writing ``memory.limit_in_bytes`` below the usage
reclaims and, when that is not enough, fails with EBUSY (nothing is killed).

:func:`shrink_limit` does it the policy's way: when the usage is above the new limit
it first holds the memcg back (v2: ``memory.high`` at the new limit, so the tasks are
throttled and reclaimed, never OOM-killed, while we decide), then kills the priority
policy's victim (``logic.priority.select_priority``, the function ``predict-victim``
and the daemon use) through the pidfd kill path, waits for its memory to come back,
and repeats until the usage fits or nothing killable is left; only then writes the
limit (while the valve still holds), and restores ``memory.high``.
"""

from __future__ import annotations

import errno
import signal
import time
from collections.abc import Callable
from typing import Any

from memcgctl.actions.kill import Killer
from memcgctl.env import Env
from memcgctl.kernel.cgroupfiles import V1_LIMIT, V2_HIGH, V2_MAX
from memcgctl.logic.decision import Decision
from memcgctl.logic.priority import rank_priority, select_priority
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import (
    MemcgctlError,
    NotSupported,
    OperationFailed,
    UsageProblem,
    Vanished,
)
from memcgctl.vocab.structs import dataclass, field

# the daemon's ownership mark (daemon/owner.py MARK; this layer may not import it)
DAEMON_MARK = "trusted.memcgctl.daemon"


@dataclass
class ShrinkKill:
    pid: int
    comm: str
    cgroup: CgroupPath
    badness: int
    rss_kb: int

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "comm": self.comm,
            "cgroup": self.cgroup,
            "badness": self.badness,
            "rss_kb": self.rss_kb,
        }


@dataclass
class ShrinkReport:
    cgroup: CgroupPath
    version: int
    limit_before: int | None
    usage_before: int
    limit: int | None  # None: unlimited ("max")
    killed: list[ShrinkKill] = field(default_factory=list)
    written: bool = False
    valve: bool = False  # v2: memory.high was held at the new limit meanwhile
    usage_after: int | None = None
    dry_run: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "cgroup": self.cgroup,
            "version": self.version,
            "limit_before": self.limit_before,
            "usage_before_bytes": self.usage_before,
            "limit_bytes": self.limit,
            "usage_after_bytes": self.usage_after,
            "valve": self.valve,
            ("would_kill" if self.dry_run else "killed"): [k.to_json() for k in self.killed],
            "written": self.written,
            "dry_run": self.dry_run,
        }


def _kill_of(d: Decision) -> ShrinkKill:
    v = d.victim
    assert v is not None
    return ShrinkKill(v.pid, v.comm, v.cgroup, v.badness, v.rss_kb + v.swap_kb)


class Shrinker:
    """One ``set-limit``: the environment, the killer, and how long to wait for a
    victim's memory (tests pass a fake clock only where they need one)."""

    def __init__(
        self,
        env: Env,
        killer: Killer,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.env = env
        self.fs = env.fs
        self.killer = killer
        self.timeout = timeout
        self.clock = clock
        self.sleep = sleep

    # -- reading ------------------------------------------------------------------------
    def _start(self, cg: CgroupPath, limit: int | None, dry_run: bool) -> ShrinkReport:
        if cg.is_root:
            raise UsageProblem(f"{cg}: the hierarchy root has no memory limit to set")
        usage = self.fs.usage(cg)
        if usage is None:
            raise NotSupported(f"{cg}: no memory usage file here (is the memory controller on?)")
        return ShrinkReport(cg, self.fs.version, self.fs.limit(cg), usage, limit, dry_run=dry_run)

    def plan(self, cg: CgroupPath, limit: int | None) -> ShrinkReport:
        """``--dry-run``: who would die, in policy order, until the victims' rss + swap
        would bring the usage under the limit (an estimate: the kernel may also
        reclaim page cache, and memory is shared)."""
        report = self._start(cg, limit, dry_run=True)
        if limit is None or report.usage_before <= limit:
            return report
        excess = report.usage_before - limit
        snap = self.env.snapshot(cg)
        freed = 0
        for d in rank_priority(snap, cg, len(snap.processes)):
            report.killed.append(_kill_of(d))
            freed += sum(
                (p.rss_kb + p.swap_kb) << 10
                for pid in (d.group_pids or (d.victim.pid,) if d.victim else ())
                if (p := snap.processes.get(pid)) is not None
            )
            if freed >= excess:
                break
        return report

    # -- writing ------------------------------------------------------------------------
    def _write_limit(self, cg: CgroupPath, limit: int | None) -> bool:
        """Write the limit; False when v1 refuses it for now (EBUSY: usage above it)."""
        if self.fs.version == 1:
            try:
                self.fs.write(cg, V1_LIMIT, "-1" if limit is None else str(limit))
            except MemcgctlError as exc:
                if exc.errno == errno.EBUSY:
                    return False
                raise
            return True
        self.fs.write(cg, V2_MAX, "max" if limit is None else str(limit))
        return True

    def shrink(
        self, cg: CgroupPath, limit: int | None, on_kill: Callable[[ShrinkKill], None]
    ) -> ShrinkReport:
        """Set ``cg``'s limit; when the usage is above it, kill by policy first.
        ``on_kill`` is told of each kill as it happens (the command journals it).
        Raises OperationFailed when nothing killable is left or the time is up (the
        limit is then left as it was)."""
        report = self._start(cg, limit, dry_run=False)
        fits = limit is None or report.usage_before <= limit
        if fits and self._write_limit(cg, limit):  # (v1: EBUSY if it grew meanwhile)
            report.written = True
            report.usage_after = self.fs.usage(cg)
            return report
        assert limit is not None
        prev_high = self.fs.read(cg, V2_HIGH) if self.fs.version == 2 else None
        if prev_high is not None and self.fs.get_xattr(cg, DAEMON_MARK) is None:
            # (a daemon's valve already holds this memcg: its memory.high is its own)
            prev = prev_high.strip()
            if prev == "max" or int(prev) > limit:
                self.fs.write(cg, V2_HIGH, str(limit))  # reclaims; never OOM-kills
                report.valve = True
        try:
            self._kill_until_it_fits(cg, limit, report, on_kill)
            report.written = True
        finally:
            if report.valve and prev_high is not None:
                self.fs.write(cg, V2_HIGH, prev_high.strip())
        report.usage_after = self.fs.usage(cg)
        return report

    def _fits(self, cg: CgroupPath, limit: int) -> bool:
        if self.fs.version == 1:
            return self._write_limit(cg, limit)
        usage = self.fs.usage(cg)
        if usage is not None and usage <= limit:
            self._write_limit(cg, limit)  # the valve still holds while we write
            return True
        return False

    def _kill_until_it_fits(
        self,
        cg: CgroupPath,
        limit: int,
        report: ShrinkReport,
        on_kill: Callable[[ShrinkKill], None],
    ) -> None:
        deadline = self.clock() + self.timeout
        gone: list[int] = []
        while not self._fits(cg, limit):
            d = select_priority(self.env.snapshot(cg), cg, gone)
            if d.victim is None:
                raise OperationFailed(
                    f"{cg}: usage {self.fs.usage(cg)} bytes is still above {limit} and nothing "
                    f"killable is left ({len(report.killed)} killed); the limit is unchanged",
                    cgroup=cg,
                )
            pids = self._kill(d)
            gone += list(d.group_pids) or [d.victim.pid]
            if pids:
                k = _kill_of(d)
                report.killed.append(k)
                on_kill(k)
            self._wait_gone(pids, deadline)
            self._settle(cg, limit, deadline)
            if self.fs.version == 2 and report.valve:
                self.fs.write(cg, V2_HIGH, str(limit))  # reclaim again, now there is room
            if self.clock() > deadline:
                raise OperationFailed(
                    f"{cg}: usage still above {limit} bytes after {self.timeout:g}s "
                    f"({len(report.killed)} killed); the limit is unchanged",
                    cgroup=cg,
                )

    def _kill(self, d: Decision) -> list[int]:
        if d.kill_group is not None:
            return [k.pid for k in self.killer.kill_all(d.kill_group, timeout=5.0).killed]
        v = d.victim
        assert v is not None
        ok = self.killer.kill_process(v.pid, v.cgroup, signal.SIGKILL, exact=True)
        return [v.pid] if ok else []

    def _settle(self, cg: CgroupPath, limit: int, deadline: float) -> None:
        """Until the victims' memory is uncharged: a task shows no mm (exit_mm) before
        mmput has freed its pages, which takes a while for a big one (seen in the
        emulated guest: the next victim was killed for memory already on its way
        back).  Wait while the usage still falls and is above the limit."""
        last = self.fs.usage(cg)
        still = 0
        while last is not None and last > limit and still < 3 and self.clock() < deadline:
            self.sleep(0.02)
            now = self.fs.usage(cg)
            if now is None:
                return
            still = still + 1 if now >= last else 0
            last = min(last, now)

    def _wait_gone(self, pids: list[int], deadline: float) -> None:
        """Until every victim has given its memory back (exited, or a zombie)."""
        while pids and self.clock() < deadline:
            alive = []
            for pid in pids:
                try:
                    if self.env.proc.status(pid).has_mm:
                        alive.append(pid)
                except Vanished:
                    continue
            if not alive:
                return
            pids = alive
            self.sleep(0.005)
