"""The daemon's real ports: the managed set, cgroup files and eventfds, the levels, the
host's meminfo and PSI trigger, the kernel log.

:class:`RealPorts` is what the core and the loop drive.  It is built from parts with
one job each, which it constructs with what they need: the :class:`Recorder` (log
lines and journal records), the :class:`Troubles` (errors it carries on after, each
said once), the :class:`Kills` (the killer, journaled), the
:class:`Knobs` (the knobs it changes under ownership marks) and the :class:`Watches`
(the notification fds).  It keeps the managed set, the valves and the levels itself.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Hashable, Iterable

from memcgctl.actions.kill import Killer
from memcgctl.daemon import owner
from memcgctl.daemon.dying import Dying
from memcgctl.daemon.journaling import Kills, Recorder, Troubles
from memcgctl.daemon.kernellog import KernelLog, victim_info
from memcgctl.daemon.knobs import Knobs, Valve
from memcgctl.daemon.protocol import Feed, Managed, Mode, Reading, Wake
from memcgctl.daemon.treewatch import TreeWatch, touched
from memcgctl.daemon.valve import (
    CLEAR,
    RECOVERED,
    SHORT,
    HostRate,
    Tuning,
    approach_poll,
    committed,
    host_available_of,
    host_level,
    host_near,
    host_poll_interval,
    lowered_next,
    memcg_level,
    memcg_near,
    v1_committed,
    v1_near,
)
from memcgctl.daemon.watches import Notifier, Watches
from memcgctl.env import Env
from memcgctl.kernel.cgroupfiles import (
    CGROUP_PROCS,
    V1_LIMIT,
    V1_OOM_CONTROL,
    V1_USAGE,
    V2_CURRENT,
    V2_EVENTS,
    V2_HIGH,
    V2_MAX,
    V2_STAT,
    V2_SWAP_CURRENT,
    V2_SWAP_MAX,
)
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.notify import EventsFileWatch, OomControlWatch, PsiTrigger
from memcgctl.kernel.procfs import MeminfoFields, ProcFs
from memcgctl.logic.decision import Decision
from memcgctl.logic.priority import plan_inputs
from memcgctl.render.logprio import Priority
from memcgctl.state.journal import Journal
from memcgctl.vocab import structs
from memcgctl.vocab.cgpath import HOST, ROOT, CgroupPath, HostScope, Scope
from memcgctl.vocab.errors import MemcgctlError, Vanished
from memcgctl.vocab.model import ProcessInfo, Snapshot
from memcgctl.vocab.records import DaemonRecord, daemon_record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

# v1: a memcg is "at its limit" (its own OOM, not an ancestor's) when usage is this close
AT_LIMIT_SLACK = 2 << 20
VALVE_POLL = 0.01  # v2: look at the domain this often during an episode
V1_POLL = 0.05  # v1: the same (no notification tells when an OOM ends)
PULSE_EVERY = 64  # cgroups walked between two pulses of a rescan (and OOM checks)
REAPED_KB = 1024  # a dying victim holding less (anon + shmem) has given its memory back
HOST_MEMINFO = ("MemTotal", "MemFree", "MemAvailable", "SwapTotal", "SwapFree")
# a standing plan's check at the event reads the cgroup.procs of each level of its
# walk: the first this many are kept open (v2), a pread each
KEPT_LEVELS = 8
# the files a look at a managed memcg reads (:meth:`RealPorts.level`), kept open while
# it is managed: a pread each, not open/read/close (issue 22: the valve's event to the
# signal under emulation)
LOOK_FILES = {
    1: (V1_OOM_CONTROL, V1_USAGE, V1_LIMIT, V2_STAT),
    2: (V2_CURRENT, V2_STAT, V2_MAX, V2_HIGH, V2_SWAP_MAX, V2_SWAP_CURRENT),
}


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


# A standing plan's stamp reads at most this many cgroups' ``cgroup.procs``: the walk's
# levels and every cgroup of the skipped empty subtrees that rank no later than the
# choice.  A delegated user may make thousands of empty cgroups ranked first (a low
# user.* badness) inside a managed memcg, or nest them thousands deep: beyond the cap
# no plan is kept (the stamp is None) and the victim is chosen afresh at the event, as
# before the plan, so that neither the refresh nor the check on the OOM path walks the
# tenant's tree.  A plan's walk on a real tree reads a few cgroups per level.
STAMP_MAX_CGROUPS = 64


StampProcs = tuple[tuple[CgroupPath, tuple[int, ...]], ...]


def procs_stamp(
    fs: CgroupFs, inputs: Iterable[tuple[CgroupPath, bool]], limit: int = STAMP_MAX_CGROUPS
) -> StampProcs | None:
    """The processes of each cgroup (of its whole subtree when asked), sorted; None
    when one is gone or cannot be read, or when that would read more than ``limit``
    cgroups (:data:`STAMP_MAX_CGROUPS`: the walk stops at the first one beyond)."""
    out = []
    left = limit
    try:
        for cg, whole in inputs:
            pids: list[int] = []
            for c in fs.walk(cg) if whole else (cg,):
                left -= 1
                if left < 0:
                    return None
                pids += fs.procs(c)
            out.append((cg, tuple(sorted(pids))))
    except (Vanished, OSError, MemcgctlError):
        return None
    return tuple(out)


def stamp_holds(proc: ProcFs, decision: Decision, before: Hashable, after: Hashable) -> bool:
    """Whether a plan stamped ``before`` (:meth:`RealPorts.plan_stamp`) holds by what is
    read now (``after``): the same tree mark and cgroups, the victim still in its
    cgroup, and no process come in them that could be a candidate.  A process gone
    changes nothing (the victim apart: it is looked for): a loser leaving does not make
    it win, and the cgroups the walk chose still hold the victim.  A kernel thread come
    (a kworker in the root cgroup) is never a candidate."""
    if not isinstance(before, tuple) or not isinstance(after, tuple) or before[0] != after[0]:
        return False
    was, now = before[1], after[1]
    if [cg for cg, _ in was] != [cg for cg, _ in now] or decision.victim is None:
        return False
    victim = decision.victim
    for (cg, old), (_, new) in zip(was, now, strict=True):
        if cg == victim.cgroup and victim.pid not in new:
            return False  # it died, or moved
        for pid in set(new) - set(old):
            try:
                if not proc.is_kernel_thread(pid):
                    return False
            except (Vanished, OSError):
                continue  # come and gone: nothing to choose
    return True


class RealPorts:
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
        self.root = root
        self.dry_run = dry_run
        self.host_delay_ms = host_delay_ms
        self.tuning = tuning if tuning is not None else Tuning()
        self.instance = instance
        self.dying = Dying()  # victims sent SIGKILL that have not exited yet
        # the parts, each with one job
        self.recorder = Recorder(journal, log if log is not None else sys.stderr)
        self.troubles = Troubles(lambda event: self.emit(event))  # emit may be wrapped
        self.kills = Kills(killer, self.dying, self.recorder)
        self.knobs = Knobs(self.fs, self.proc, instance, self.tuning, self.recorder, dry_run)
        self.watches = Watches(self.fs)  # cgroup -> the fds that notify about it
        self.valves: dict[Scope, Valve] = {}  # v2: the valve each managed memcg holds
        self._noted: set[Scope] = set()  # cgroups we said we cannot manage (said once)
        self.kernel_log: KernelLog | None = None
        self.say_no_kernel_log = True  # False: the caller said so already (non-root dry run)
        self._has_swap = True  # until managed() has looked
        # called now and then during a rescan's walk of a big tree (daemon/watchdog.py)
        self.pulse: Callable[[], None] = lambda: None
        # the heartbeat alone, now and then while the cgroup files are read (a choice
        # over a tenant's thousands of cgroups: alive, not hung; nothing else is run)
        self.beat: Callable[[], None] = lambda: None
        self.fs.on_reads = lambda: self.beat()
        # inotify on the tree and the managed limits; None: a walk per rescan
        self.tree: TreeWatch | None = None
        self.host_rate = HostRate()  # how fast MemAvailable falls, for the poll interval
        self._host_meminfo: MeminfoFields | None = None  # its reader, fd kept open
        # how fast each managed memcg nears its near line (a standing plan: core.py)
        self.approach: dict[Scope, HostRate] = {}
        # a standing plan's OOM root -> the cgroups whose cgroup.procs are kept open
        # for its check at the event (:meth:`_keep_procs`)
        self._procs_kept: dict[CgroupPath, tuple[CgroupPath, ...]] = {}

    @property
    def log(self) -> TextIO:
        """The stream the log lines go to."""
        return self.recorder.log

    def open_kernel_log(self) -> None:
        """Follow the kernel log for the kernel's own OOM kills (best effort)."""
        try:
            self.kernel_log = KernelLog(self.env)
        except (MemcgctlError, OSError) as exc:
            if self.say_no_kernel_log:
                self.recorder.line(
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
        self._has_swap = self.proc.meminfo_kb_of("SwapTotal").get("SwapTotal", 0) > 0
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
            except Vanished:
                continue
            except (OSError, MemcgctlError) as exc:  # unreadable: not managed, said once
                self.troubles.failed("setting", cg, exc)
                continue
            self.troubles.ok("setting", cg)
            if delay is not None:
                out[cg] = delay
        if self.host_delay_ms is not None and self.root.is_root:
            out[HOST] = self.host_delay_ms
        last = self.tree.last if self.tree is not None else None
        for v in list(self.valves.values()):  # units come and go below a valve
            if touched(last, v.domain):  # not a walk of each domain at every rescan
                self.knobs.omit_from_oomd(v.domain)
        return out

    def _delay_of(self, cg: CgroupPath) -> int | None:
        from memcgctl.state.store import OOM_DELAY, read_setting

        try:
            delay = read_setting(self.fs, cg, OOM_DELAY).value
        except Vanished:
            return None
        except (OSError, MemcgctlError) as exc:  # unreadable: not managed, said once
            self.troubles.failed("setting", cg, exc)
            return None
        self.troubles.ok("setting", cg)
        return delay

    def take_over(self, cg: Scope) -> Managed | None:
        try:
            if isinstance(cg, HostScope):
                return self._take_host()
            if self.fs.version == 2:
                m = self._take_valve(cg)
            else:
                if not self.dry_run:
                    self.knobs.pause(cg)
                self.watches.add(cg, [OomControlWatch(self.fs, cg)])
                self._noted.discard(cg)
                m = Managed(Mode.OOM, cg)
            if m is not None and self.tree is not None:  # a write to its limits wakes us
                self.tree.follow(cg, m.domain, self.fs.version)
            if m is not None:
                self.fs.keep_open(m.domain, LOOK_FILES[self.fs.version])
            return m
        except Vanished:  # removed since the rescan listed it: nothing to say
            self.watches.close(cg)
            return None
        except (OSError, MemcgctlError) as exc:
            self._cannot(cg, str(exc))
            self.watches.close(cg)
            return None

    def _cannot(self, cg: Scope, why: str) -> None:
        if cg not in self._noted:
            self._noted.add(cg)
            self.recorder.line(Priority.ERR, "cannot_manage", cg, error=why)

    def _take_host(self) -> Managed:
        watches: list[Notifier] = []
        try:  # PSI wakes us between two meminfo polls; meminfo alone still works
            path = str(self.env.proc_root / "pressure" / "memory")
            t = self.tuning
            watches.append(PsiTrigger(path, t.psi_stall_us, t.psi_window_us))
        except (OSError, Vanished) as exc:
            self.recorder.line(Priority.WARNING, "no_psi_trigger", HOST, error=str(exc))
        self.watches.add(HOST, watches)
        return Managed(Mode.HOST, ROOT)  # the host's victims are chosen in the whole hierarchy

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
        valve = self.knobs.valve(cg, domain)
        if not self.dry_run:
            self.knobs.install(valve)
            self.knobs.omit_from_oomd(domain)
            mark = owner.read_mark(self.fs, domain) or {}
            if "cgroup.freeze" in mark:  # left frozen by a dead instance: thaw; the
                self.knobs.freeze_domain(domain, False)  # core freezes again if critical
        self.valves[cg] = valve
        self.watches.add(cg, [EventsFileWatch(self.fs, domain, V2_EVENTS)])
        self._noted.discard(cg)
        return Managed(Mode.VALVE, domain)

    def release_orphans(self) -> list[CgroupPath]:
        """At start: restore the marks of dead instances that no watch of ours adopted
        (their delay was cleared while no daemon ran).  A walk of the whole tree: it
        pulses (the loop serves the notifications that came meanwhile, and beats)."""
        held = {v.domain for v in self.valves.values()}
        held |= {
            cg for cg in self.watches if cg not in self.valves and not isinstance(cg, HostScope)
        }
        released = []
        for cg, mark in owner.releasable(self.fs, self.proc, self.root, pulse=self.pulse):
            if cg in held:
                continue
            try:
                knobs = owner.restore(self.fs, cg, mark)
            except Vanished:
                continue
            except MemcgctlError as exc:
                self.troubles.failed("restore", cg, exc)
                continue
            released.append(cg)
            self.emit(daemon_record("daemon_released", cg, reason="orphaned mark", restored=knobs))
        return released

    def release(self, cg: Scope) -> None:
        self.watches.close(cg)
        self.approach.pop(cg, None)
        if self.tree is not None:
            self.tree.unfollow(cg)
        v = self.valves.pop(cg, None)
        if isinstance(cg, HostScope):
            self.kills.unpin(ROOT)  # the host's plan: its victims are chosen from the root
            self._keep_procs(ROOT, [])
            return
        target = v.domain if v is not None else cg
        self.fs.close_kept(target, LOOK_FILES[self.fs.version])
        self.kills.unpin(target)
        self._keep_procs(target, [])
        try:
            mark = owner.read_mark(self.fs, target)
            if mark is not None and mark.get("instance") == self.instance:
                owner.restore(self.fs, target, mark)
        except Vanished:
            pass
        except MemcgctlError as exc:  # the knob stays as we set it: say so
            self.troubles.failed("restore", target, exc)
        if v is not None:
            self.knobs.give_back_to_oomd(v.domain, [w.domain for w in self.valves.values()])

    def close_all(self) -> None:
        """Every fd.  The journal writer stays open for the records of the way out
        (``daemon_stopped`` and its shadow-mode summary): :meth:`close_journal`."""
        self.watches.close_all()
        self.fs.close_kept()
        self._procs_kept.clear()
        self.kills.unpin(None)
        if self.kernel_log is not None:
            self.kernel_log.close()
            self.kernel_log = None
        if self._host_meminfo is not None:
            self._host_meminfo.close()
            self._host_meminfo = None

    def close_journal(self) -> None:
        """The journal writer's last flush (bounded), after the last record."""
        self.recorder.close()

    # -- notifications (for the loop) ----------------------------------------------------
    def _klog_fd(self) -> int:
        return self.kernel_log.fileno() if self.kernel_log is not None else -1

    def fds(self) -> dict[int, Scope | Feed]:
        """fd -> the cgroup it notifies about (KERNEL_LOG for the kernel log); the same
        object while the set is unchanged."""
        return self.watches.fds(self._klog_fd())

    def poll_events(self, fd: int) -> int:
        """The poll mask to wait for on fd (:meth:`Watches.poll_events`)."""
        return self.watches.poll_events(fd, self._klog_fd())

    def consume(self, cg: Scope, fd: int, error: bool) -> Wake:
        """Read what woke us on fd (:meth:`Watches.consume`)."""
        return self.watches.consume(cg, fd, error, self._klog_fd())

    # -- state ------------------------------------------------------------------------
    def level(self, cg: Scope) -> Reading:
        """cg's level; CLEAR when it cannot be read: gone (the next rescan releases it),
        or an error, said once per condition (:class:`Troubles`)."""
        try:
            level = self._level(cg)
        except Vanished:
            return Reading(CLEAR)
        except (MemcgctlError, OSError) as exc:
            self.troubles.failed("level", cg, exc)
            return Reading(CLEAR)
        self.troubles.ok("level", cg)
        return level

    def _level(self, cg: Scope) -> Reading:
        if isinstance(cg, HostScope):
            if self._host_meminfo is None:  # one pread per look (issue 22: idle CPU)
                self._host_meminfo = self.proc.meminfo_fields(*HOST_MEMINFO)
            avail, total = host_available_of(*self._host_meminfo.read())
            hl = self.tuning.host
            rate = self.host_rate.update(time.monotonic(), avail)
            poll = host_poll_interval(avail, total, hl, rate)
            return Reading(host_level(avail, total, hl), poll, host_near(avail, total, hl))
        v = self.valves.get(cg)
        if v is not None:
            v = self.valves[cg] = self.knobs.refresh(v)
            current = self.fs.usage(v.domain) or 0
            if v.early and v.low is not None:  # the lower step: raised at its event
                lowered = lowered_next(current, v.lines, v.low, v.lowered)
                if lowered != v.lowered:
                    v = self.valves[cg] = self.knobs.step(v, lowered)
            used = committed(current, self.fs.memory_stat(v.domain), self._swap_room(v.domain))
            ln = v.lines
            near = memcg_near(used, ln)
            soon = None if near else self._approach(cg, 2 * ln.line - ln.limit - used)
            return Reading(memcg_level(used, ln), VALVE_POLL, near, soon)
        if bool(self.fs.oom_control(cg).get("under_oom", 0)):
            return Reading(SHORT, V1_POLL, near=True)
        usage, limit = self.fs.usage(cg), self.fs.limit(cg)
        if usage is None or limit is None:
            return Reading(CLEAR)
        # near its limit once page cache (which the limit reclaims first) is left out:
        # memory.stat is read only when the usage alone is near
        near = v1_near(usage, limit) and v1_near(
            v1_committed(self.fs.memory_stat(cg), usage), limit
        )
        soon = None if near else self._approach(cg, limit - limit // 8 - usage)
        if usage < limit - limit // 16:
            return Reading(RECOVERED, near=near, soon=soon)
        return Reading(CLEAR, near=near, soon=soon)

    def _approach(self, cg: Scope, room: int) -> float | None:
        """When to look at a memcg again that is ``room`` bytes below its near line,
        by how fast it came closer over the last looks (:func:`approach_poll`)."""
        rate = self.approach.setdefault(cg, HostRate()).update(time.monotonic(), room)
        return approach_poll(room, rate)

    def _swap_room(self, domain: CgroupPath) -> int:
        if not self._has_swap:
            return 0
        own = self.fs.swap_room(domain)
        host = self.proc.meminfo_kb_of("SwapFree").get("SwapFree", 0) * 1024
        return host if own is None else min(own, host)

    def arm_near(self, cg: Scope, on: bool) -> None:
        """v2: whether cg's valve takes its lower step while far below it, so that the
        kernel's ``high`` event says "near" (a watch that chooses ahead: delay 0); off:
        raised to the valve at once."""
        v = self.valves.get(cg)
        if v is None or v.early == on:
            return
        v = self.valves[cg] = structs.replace(v, early=on)
        if not on and v.lowered:
            try:
                self.valves[cg] = self.knobs.step(v, False)
            except Vanished:
                pass
            except (MemcgctlError, OSError) as exc:
                self.troubles.failed("level", cg, exc)

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
        return self.knobs.freeze_domain(v.domain, frozen)

    # -- actions and the record ---------------------------------------------------------
    def kill(self, decision: Decision) -> list[int]:
        return self.kills.kill(decision)

    def kill_all(self, cg: CgroupPath) -> list[int]:
        return self.kills.kill_all(cg)

    def emit(self, event: DaemonRecord) -> None:
        self.recorder.emit(event)

    def hold_records(self, on: bool) -> None:
        self.recorder.hold(on)

    def exited(self, pids: Iterable[int]) -> bool:
        dying = self.dying.pids()
        return not any(pid in dying for pid in pids)

    def reap(self, pids: list[int]) -> None:
        self.kills.reap(pids)

    def exit_fds(self) -> list[int]:
        """The pidfds of the victims still exiting: the loop wakes when one fires."""
        return self.dying.fds()

    def snapshot(self, cg: CgroupPath, budget: int | None = None) -> Snapshot:
        # a process is read when looked at (issue 22); dying victims are not killable
        return self.dying.hide(self.env.snapshot(cg, lazy=True, budget=budget))

    def plan_mark(self, domain: CgroupPath) -> Hashable | None:
        """The tree watch's mark for ``domain`` (:meth:`TreeWatch.mark`); None without
        a tree watch, or when it cannot be told."""
        return self.tree.mark(domain) if self.tree is not None else None

    def plan_stamp(self, decision: Decision) -> Hashable | None:
        """The tree watch's mark for the decision's domain and the processes of the
        cgroups its walk compared (:func:`~memcgctl.logic.priority.plan_inputs`): one
        ``cgroup.procs`` read per level, and per cgroup of a skipped empty subtree that
        ranked no later than the choice.  None without a tree watch (a badness written
        meanwhile could not be seen) or a priority walk, or when more than
        :data:`STAMP_MAX_CGROUPS` cgroups would be read (a tenant's thousands of empty
        cgroups): no plan is kept then, the victim is chosen at the event."""
        stamp = self._stamp(decision)
        if stamp is not None and not self.dry_run:
            # the victim's pidfd, from now on: at the event its signal is sent through
            # it, right after the check has read the victim in its cgroup (issue 22)
            self.kills.pin_plan(decision)
        levels = [cg for cg, whole in plan_inputs(decision) if not whole] if stamp else []
        self._keep_procs(decision.oom_root, levels[:KEPT_LEVELS])
        return stamp

    def _keep_procs(self, root: CgroupPath, cgroups: list[CgroupPath]) -> None:
        """Keep the ``cgroup.procs`` of the cgroups a plan in ``root`` is checked on
        open (v2: a pread at the event), and close those no plan needs any more.  Not
        on v1, whose ``cgroup.procs`` read again through one open file may be the list
        it made up to a second before (the kernel's pidlist cache)."""
        if self.fs.version != 2:
            return
        before = {cg for cgs in self._procs_kept.values() for cg in cgs}
        if cgroups:
            self._procs_kept[root] = tuple(cgroups)
        else:
            self._procs_kept.pop(root, None)
        wanted = {cg for cgs in self._procs_kept.values() for cg in cgs}
        for cg in before - wanted:
            self.fs.close_kept(cg, (CGROUP_PROCS,))
        for cg in wanted - before:
            self.fs.keep_open(cg, (CGROUP_PROCS,))

    def _stamp(self, decision: Decision, mark: int | None = None) -> tuple[int, StampProcs] | None:
        inputs = plan_inputs(decision)
        if self.tree is None or not inputs or len(inputs) > STAMP_MAX_CGROUPS:
            return None
        if mark is None:
            mark = self.tree.mark(decision.oom_root)
        if mark is None:
            return None
        procs = procs_stamp(self.fs, inputs)
        return None if procs is None else (mark, procs)

    def plan_holds(self, decision: Decision, stamp: Hashable) -> bool:
        """:meth:`CorePorts.plan_holds`.  When it holds, the victim was read in its
        cgroup's ``cgroup.procs`` just now, after the pidfd pinned when the plan was
        chosen: the kill then only signals through that pidfd (a victim that died
        since, its pid reused or not, is not hit: ``ESRCH``, chosen afresh)."""
        self.kills.checked(None)
        if self.tree is None or not isinstance(stamp, tuple):
            return False
        mark = self.tree.mark(decision.oom_root)
        if mark is None or mark != stamp[0]:
            return False  # the tree changed: no cgroup.procs read on the OOM path
        now = self._stamp(decision, mark)
        if now is None or not stamp_holds(self.proc, decision, stamp, now):
            return False
        victim = decision.victim
        if victim is not None and any(
            cg == victim.cgroup and victim.pid in pids for cg, pids in now[1]
        ):
            self.kills.checked(decision)
        return True

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
