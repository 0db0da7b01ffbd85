"""The daemon's real ports: the managed set, cgroup files and eventfds, the levels, the
host's meminfo and PSI trigger, the kernel log.

:class:`RealPorts` is what the core and the loop drive.  The knobs it changes under
ownership marks come from :class:`~memcgctl.daemon.knobs.Knobs`, the kills and what
is logged and journaled from :class:`~memcgctl.daemon.journaling.Journaling`.
"""

from __future__ import annotations

import select
import sys
import time
from collections.abc import Callable, Iterable
from typing import TextIO

from memcgctl.actions.kill import Killer
from memcgctl.daemon import owner
from memcgctl.daemon.dying import Dying
from memcgctl.daemon.journaling import JournalWriter
from memcgctl.daemon.kernellog import KernelLog, victim_info
from memcgctl.daemon.knobs import Knobs, Valve
from memcgctl.daemon.protocol import Level, Managed
from memcgctl.daemon.treewatch import TreeWatch
from memcgctl.daemon.valve import (
    CLEAR,
    RECOVERED,
    SHORT,
    HostRate,
    Tuning,
    committed,
    host_available,
    host_level,
    host_poll_interval,
    memcg_level,
)
from memcgctl.env import Env
from memcgctl.kernel.cgroupfiles import V2_EVENTS
from memcgctl.kernel.notify import EventsFileWatch, OomControlWatch, PsiTrigger
from memcgctl.render.logprio import Priority
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import HOST, ROOT, CgroupPath, HostScope, Scope
from memcgctl.vocab.errors import MemcgctlError, Vanished
from memcgctl.vocab.model import ProcessInfo, Snapshot
from memcgctl.vocab.records import daemon_record

# v1: a memcg is "at its limit" (its own OOM, not an ancestor's) when usage is this close
AT_LIMIT_SLACK = 2 << 20
VALVE_POLL = 0.01  # v2: look at the domain this often during an episode
V1_POLL = 0.05  # v1: the same (no notification tells when an OOM ends)
_VALVE_EVENTS = ("high", "max", "oom")
PULSE_EVERY = 256  # cgroups walked between two pulses of a rescan
REAPED_KB = 1024  # a dying victim holding less (anon + shmem) has given its memory back
HOST_MEMINFO = ("MemTotal", "MemFree", "MemAvailable", "SwapTotal", "SwapFree")


CAP_SYS_RESOURCE = 24
PSI_UNPRIVILEGED_STEP_US = 2_000_000


def psi_params(stall_us: int, window_us: int, privileged: bool) -> tuple[int, int]:
    """The trigger the kernel will accept.  Without CAP_SYS_RESOURCE (root on some
    hosts lacks it) the window must be a multiple of 2 s (kernel/sched/psi.c,
    psi_trigger_create): round it up and scale the stall time with it."""
    if privileged or window_us % PSI_UNPRIVILEGED_STEP_US == 0:
        return stall_us, window_us
    step = PSI_UNPRIVILEGED_STEP_US
    window = (window_us + step - 1) // step * step
    return stall_us * window // window_us, window


_Notifier = OomControlWatch | PsiTrigger | EventsFileWatch


class _Watches(dict[Scope, list[_Notifier]]):
    """cgroup -> its notification fds; ``version`` changes with every change of the set
    (the fd index is rebuilt then, not on every wake-up)."""

    version = 0

    def __setitem__(self, key: Scope, value: list[_Notifier]) -> None:
        self.version += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: Scope) -> None:
        self.version += 1
        super().__delitem__(key)

    def pop(self, key: Scope, *default: list[_Notifier]) -> list[_Notifier]:  # type: ignore[override]
        self.version += 1
        return super().pop(key, *default)


class RealPorts(Knobs):
    def __init__(
        self,
        env: Env,
        killer: Killer,
        journal: Journal,
        root: CgroupPath = ROOT,
        dry_run: bool = False,
        host_delay_ms: int | None = None,
        tuning: Tuning | None = None,
        instance: str = "",
        log: TextIO | None = None,
    ) -> None:
        self.env = env
        self.fs = env.fs
        self.proc = env.proc
        self.killer = killer
        self.journal = journal
        self.root = root
        self.dry_run = dry_run
        self.host_delay_ms = host_delay_ms
        self.tuning = tuning if tuning is not None else Tuning()
        self.instance = instance
        self.log = log if log is not None else sys.stderr
        # cgroup -> the fds that notify about it, for the loop to poll
        self.watches: _Watches = _Watches()
        self._fd_index: tuple[
            tuple[int, int], dict[int, tuple[Scope, _Notifier]], dict[int, Scope | str]
        ] = ((-1, -1), {}, {})
        self.valves: dict[Scope, Valve] = {}
        self._noted: set[Scope] = set()  # cgroups we said we cannot manage (said once)
        self.kernel_log: KernelLog | None = None
        self.say_no_kernel_log = True  # False: the caller said so already (non-root dry run)
        self._has_swap = True  # until managed() has looked
        self.dying = Dying()  # victims sent SIGKILL that have not exited yet
        # called now and then during a rescan's walk of a big tree (daemon/watchdog.py)
        self.pulse: Callable[[], None] = lambda: None
        # inotify on the tree and the managed limits; None: a walk per rescan
        self.tree: TreeWatch | None = None
        self.host_rate = HostRate()  # how fast MemAvailable falls, for the poll interval
        self.writer = JournalWriter(
            journal, lambda text: self._log(Priority.WARNING, "journal_failed", "-", error=text)
        )

    def open_kernel_log(self) -> None:
        """Follow the kernel log for the kernel's own OOM kills (best effort)."""
        try:
            self.kernel_log = KernelLog(self.env)
        except (MemcgctlError, OSError) as exc:
            if self.say_no_kernel_log:
                self._log(
                    Priority.WARNING, "no_kernel_log", "-", source=self.env.kmsg, error=str(exc)
                )

    def kernel_kills(self) -> list[tuple[CgroupPath, ProcessInfo]]:
        """(OOM domain, victim) of every kernel OOM kill logged since the last call,
        inside our root."""
        if self.kernel_log is None:
            return []
        out = []
        for ev in self.kernel_log.kills():
            domain = self.fs.from_proc_path(str(ev.get("oom_memcg") or "/"))
            task = self.fs.from_proc_path(str(ev.get("cgroup") or domain))
            if not self.root.contains(domain):
                continue
            out.append((domain, victim_info(ev, task)))
        return out

    # -- the managed set ---------------------------------------------------------------
    def managed(self) -> dict[Scope, int]:
        from memcgctl.state.store import OOM_DELAY, read_setting

        # swapon/swapoff are rare: whether there is swap at all is looked at per rescan,
        # not per valve check (most hosts have none, and then nothing more is read)
        self._has_swap = self.proc.meminfo_kb().get("SwapTotal", 0) > 0
        out: dict[Scope, int] = {}
        if self.tree is not None:  # what changed since the last rescan (daemon/treewatch.py)
            out.update(self.tree.managed(self._delay_of, self.pulse))
        for n, cg in enumerate(self.fs.walk(self.root) if self.tree is None else ()):
            if n % PULSE_EVERY == PULSE_EVERY - 1:
                self.pulse()  # a long walk is work, not a hang (the guardian, WatchdogSec=)
            if cg.is_root:
                continue  # the root has no limit to hold; the host is --host-delay
            try:
                delay = read_setting(self.fs, cg, OOM_DELAY).value
            except (Vanished, OSError, MemcgctlError):  # gone, or unreadable: not managed
                continue
            if delay is not None:
                out[cg] = delay
        if self.host_delay_ms is not None and self.root.is_root:
            out[HOST] = self.host_delay_ms
        return out

    def _delay_of(self, cg: CgroupPath) -> int | None:
        from memcgctl.state.store import OOM_DELAY, read_setting

        try:
            return read_setting(self.fs, cg, OOM_DELAY).value
        except (Vanished, OSError, MemcgctlError):  # gone, or unreadable: not managed
            return None

    def take_over(self, cg: Scope) -> Managed | None:
        try:
            if isinstance(cg, HostScope):
                return self._take_host()
            if self.fs.version == 2:
                m = self._take_valve(cg)
            else:
                if not self.dry_run:
                    self._pause(cg)
                self.watches[cg] = [OomControlWatch(self.fs, cg)]
                self._noted.discard(cg)
                m = Managed("oom", cg)
            if m is not None and self.tree is not None:  # a write to its limits wakes us
                self.tree.follow(cg, m.domain, self.fs.version)
            return m
        except (Vanished, OSError, MemcgctlError) as exc:
            self._cannot(cg, str(exc))
            self._close(cg)
            return None

    def _cannot(self, cg: Scope, why: str) -> None:
        if cg not in self._noted:
            self._noted.add(cg)
            self._log(Priority.ERR, "cannot_manage", cg, error=why)

    def _take_host(self) -> Managed:
        watches: list[OomControlWatch | PsiTrigger | EventsFileWatch] = []
        try:  # PSI wakes us between two meminfo polls; meminfo alone still works
            path = str(self.env.proc_root / "pressure" / "memory")
            t = self.tuning
            watches.append(PsiTrigger(path, t.psi_stall_us, t.psi_window_us))
        except (OSError, Vanished) as exc:
            self._log(Priority.WARNING, "no_psi_trigger", HOST, error=str(exc))
        self.watches[HOST] = watches
        return Managed("host", ROOT)  # the host's victims are chosen in the whole hierarchy

    def _domain(self, cg: CgroupPath, bound: CgroupPath | None = None) -> CgroupPath | None:
        """The OOM domain of cg inside our root: cg or the nearest ancestor with a
        memory.max, no higher than ``bound``."""
        cur: CgroupPath | None = cg
        while cur is not None and not cur.is_root:
            if self.fs.limit(cur) is not None:
                return cur
            if cur in (self.root, bound):
                return None
            cur = cur.parent
        return None

    def _delegation_bound(self, cg: CgroupPath) -> CgroupPath | None:
        """Where a delay set through ``user.*`` stops (SPEC §2.3): the top of its
        owner's delegation, so that the valve, the freeze and the escalation never
        reach a cgroup that owner does not own.  None for a ``trusted.*`` delay."""
        from memcgctl.state.store import OOM_DELAY, delegation_root, read_setting

        if read_setting(self.fs, cg, OOM_DELAY).source != "user":
            return None
        return delegation_root(self.fs, cg)

    def _take_valve(self, cg: CgroupPath) -> Managed | None:
        bound = self._delegation_bound(cg)
        domain = self._domain(cg, bound)
        if domain is None and bound is not None and self._domain(cg) is not None:
            self._cannot(
                cg,
                f"user.* delay ignored: no memory.max on it or above it inside its "
                f"owner's delegation (up to {bound}); the limit above is not theirs",
            )
            return None
        if domain is None:
            self._cannot(
                cg,
                f"no memory.max on it or an ancestor below {self.root}: "
                "nothing to hold back (the host is --host-delay)",
            )
            return None
        for v in self.valves.values():
            if v.domain == domain:
                self._cannot(cg, f"its OOM domain {domain} is managed through {v.cg}")
                return None
        valve = self._valve(cg, domain)
        if not self.dry_run:
            self._install(valve)
            mark = owner.read_mark(self.fs, domain) or {}
            if "cgroup.freeze" in mark:  # left frozen by a dead instance: thaw; the
                self.freeze_domain(domain, False)  # core freezes again if still critical
        self.valves[cg] = valve
        self.watches[cg] = [EventsFileWatch(self.fs, domain, V2_EVENTS)]
        self._noted.discard(cg)
        return Managed("valve", domain)

    def release_orphans(self) -> list[CgroupPath]:
        """At start: restore the marks of dead instances that no watch of ours adopted
        (their delay was cleared while no daemon ran)."""
        held = {v.domain for v in self.valves.values()}
        held |= {
            cg for cg in self.watches if cg not in self.valves and not isinstance(cg, HostScope)
        }
        released = []
        for cg, mark in owner.releasable(self.fs, self.proc, self.root):
            if cg in held:
                continue
            try:
                knobs = owner.restore(self.fs, cg, mark)
            except (Vanished, MemcgctlError):
                continue
            released.append(cg)
            self.emit(daemon_record("daemon_released", cg, reason="orphaned mark", restored=knobs))
        return released

    def release(self, cg: Scope) -> None:
        self._close(cg)
        if self.tree is not None:
            self.tree.unfollow(cg)
        v = self.valves.pop(cg, None)
        if isinstance(cg, HostScope):
            return
        target = v.domain if v is not None else cg
        try:
            mark = owner.read_mark(self.fs, target)
            if mark is not None and mark.get("instance") == self.instance:
                owner.restore(self.fs, target, mark)
        except (Vanished, MemcgctlError):
            pass

    def _close(self, cg: Scope) -> None:
        for w in self.watches.pop(cg, []):
            w.close()

    def close_all(self) -> None:
        """Every fd.  The journal writer stays open for the records of the way out
        (``daemon_stopped`` and its shadow-mode summary): :meth:`close_journal`."""
        for cg in list(self.watches):
            self._close(cg)
        if self.kernel_log is not None:
            self.kernel_log.close()
            self.kernel_log = None

    def close_journal(self) -> None:
        """The journal writer's last flush (bounded), after the last record."""
        self.writer.close()

    # -- notifications (for the loop) ----------------------------------------------------
    def _index(self) -> tuple[dict[int, tuple[Scope, _Notifier]], dict[int, Scope | str]]:
        """fd -> (cgroup, watch), and the loop's fd -> cgroup map: rebuilt only when the
        watched set changed (or the kernel log's fd did), so a wake-up costs O(1) per fd."""
        klog = self.kernel_log.fileno() if self.kernel_log is not None else -1
        key = (self.watches.version, klog)
        if self._fd_index[0] != key:
            by_fd = {w.fileno(): (cg, w) for cg, ws in self.watches.items() for w in ws}
            by_fd.pop(-1, None)
            out: dict[int, Scope | str] = {fd: cg for fd, (cg, _) in by_fd.items()}
            if klog >= 0:
                out[klog] = ""
            self._fd_index = (key, by_fd, out)
        return self._fd_index[1], self._fd_index[2]

    def fds(self) -> dict[int, Scope | str]:
        """fd -> the cgroup it notifies about ("" for the kernel log); the same object
        while the set is unchanged."""
        return self._index()[1]

    def poll_events(self, fd: int) -> int:
        """The poll mask to wait for on fd: POLLIN for a v1 eventfd; POLLPRI only for
        PSI triggers and memory.events, whose poll() always reports POLLIN (the kernel's
        DEFAULT_POLLMASK) and signals with POLLPRI."""
        found = self._index()[0].get(fd)
        if found is not None:
            return select.POLLIN if isinstance(found[1], OomControlWatch) else select.POLLPRI
        if self.kernel_log is not None and fd == self.kernel_log.fileno():
            return select.POLLIN
        return select.POLLPRI

    def consume(self, cg: Scope, fd: int, error: bool) -> str:
        """Read what woke us on fd: "fired" (look at cg now), "quiet" (nothing that
        matters, e.g. another memory.events counter), or "gone" (cgroup removed)."""
        found = self._index()[0].get(fd)
        for w in [found[1]] if found is not None and found[0] == cg else []:
            if isinstance(w, OomControlWatch):
                # v1 also fires once when the cgroup is removed
                if w.drain() == 0:
                    return "quiet"
                return "fired" if isinstance(cg, HostScope) or self.fs.exists(cg) else "gone"
            if isinstance(w, EventsFileWatch):
                # kernfs wakes with POLLPRI|POLLERR on every change: compare counters
                try:
                    values = w.read()
                except Vanished:
                    return "gone"
                old, w.values = w.values, values
                grew = any(values.get(k, 0) > old.get(k, 0) for k in _VALVE_EVENTS)
                return "fired" if grew else "quiet"
            return "gone" if error and not isinstance(cg, HostScope) else "fired"  # PSI: POLLERR
        return "quiet"

    # -- state ------------------------------------------------------------------------
    def level(self, cg: Scope) -> Level:
        try:
            if isinstance(cg, HostScope):
                avail, total = host_available(self.proc.meminfo_kb_of(*HOST_MEMINFO))
                hl = self.tuning.host
                rate = self.host_rate.update(time.monotonic(), avail)
                poll = host_poll_interval(avail, total, hl, rate)
                return Level(host_level(avail, total, hl), poll)
            v = self.valves.get(cg)
            if v is not None:
                v = self._refresh(v)
                used = committed(
                    self.fs.usage(v.domain) or 0,
                    self.fs.memory_stat(v.domain),
                    self._swap_room(v.domain),
                )
                return Level(memcg_level(used, v.lines), VALVE_POLL)
            if bool(self.fs.oom_control(cg).get("under_oom", 0)):
                return Level(SHORT, V1_POLL)
            usage, limit = self.fs.usage(cg), self.fs.limit(cg)
            if usage is not None and limit is not None and usage < limit - limit // 16:
                return Level(RECOVERED)
            return Level(CLEAR)
        except (Vanished, MemcgctlError, OSError):
            return Level(CLEAR)

    def _swap_room(self, domain: CgroupPath) -> int:
        if not self._has_swap:
            return 0
        own = self.fs.swap_room(domain)
        host = self.proc.meminfo_kb().get("SwapFree", 0) * 1024
        return host if own is None else min(own, host)

    def at_limit(self, cg: Scope) -> bool:
        if isinstance(cg, HostScope):
            return False  # the host has no limit (the core asks only in v1 "oom" mode)
        try:
            usage, limit = self.fs.usage(cg), self.fs.limit(cg)
        except Vanished:
            return False
        return usage is not None and limit is not None and usage + AT_LIMIT_SLACK >= limit

    def freeze(self, cg: Scope, frozen: bool) -> bool:
        v = self.valves.get(cg)
        if v is None or self.dry_run or (frozen and not self.tuning.freeze):
            return False
        return self.freeze_domain(v.domain, frozen)

    def snapshot(self, cg: CgroupPath) -> Snapshot:
        # a process is read when looked at (issue 22); dying victims are not killable
        return self.dying.hide(self.env.snapshot(cg, lazy=True))

    def alive(self, pids: Iterable[int]) -> list[int]:
        """Those of pids still holding memory.  A victim we sent SIGKILL had its memory
        reaped (process_mrelease) then: stuck exiting with nothing left to free, it does
        not hold the next round back beyond the grace."""
        out = []
        dying = self.dying.pids()
        for pid in pids:
            try:
                st = self.proc.status(pid)
            except Vanished:
                continue
            if not st.has_mm:  # a zombie has given its memory back
                continue
            if pid in dying and st.rss_anon_kb + st.rss_shmem_kb < REAPED_KB:
                continue
            out.append(pid)
        return out


__all__ = ["CLEAR", "HOST", "RealPorts"]
