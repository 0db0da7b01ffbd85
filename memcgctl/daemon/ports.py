"""The daemon's real ports: cgroup files, eventfds, the OOM valve, the killer, the journal.

Ownership (owner.py): before changing a knob — v1 ``oom_kill_disable``, v2
``memory.high`` (the valve) and ``cgroup.freeze`` — the port writes a mark holding the
value it found and this instance's id; release restores exactly that and removes the
mark, so after a crash the guardian, a restarted daemon or ``memcgctl daemon --release``
(systemd's ExecStopPost) knows what to put back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from memcgctl.actions.kill import Killer
from memcgctl.actions.killreport import PIDFD
from memcgctl.daemon import owner
from memcgctl.daemon.core import Level, Managed
from memcgctl.daemon.valve import (
    CLEAR,
    RECOVERED,
    SHORT,
    HostLines,
    Lines,
    committed,
    high_to_write,
    host_available,
    host_level,
    host_poll_interval,
    lines,
    memcg_level,
)
from memcgctl.env import Env
from memcgctl.kernel.cgroupfs import V1_OOM_CONTROL, V2_EVENTS, V2_HIGH
from memcgctl.kernel.notify import EventsFileWatch, OomControlWatch, PsiTrigger
from memcgctl.logic.policy import Decision
from memcgctl.render.logprio import Priority, prefixed
from memcgctl.render.safetext import log_value
from memcgctl.state.journal import Journal
from memcgctl.vocab.cgpath import HOST, ROOT, CgroupPath, HostScope, Scope
from memcgctl.vocab.errors import MemcgctlError, OwnedElsewhere, Vanished
from memcgctl.vocab.model import ProcessInfo, Snapshot
from memcgctl.vocab.records import (
    DaemonRecord,
    Event,
    KernelEvent,
    daemon_record,
    journaled,
    user_kill,
    utc_now_iso,
)

# v1: a memcg is "at its limit" (its own OOM, not an ancestor's) when usage is this close
AT_LIMIT_SLACK = 2 << 20
VALVE_POLL = 0.01  # v2: look at the domain this often during an episode
V1_POLL = 0.05  # v1: the same (no notification tells when an OOM ends)
_PRIORITY = {
    "daemon_kill": Priority.WARNING,
    "daemon_escalated": Priority.WARNING,
    "under_oom": Priority.NOTICE,
    "no_victim": Priority.ERR,
    "valve_frozen": Priority.WARNING,
    "kernel_kill": Priority.WARNING,
}
_VALVE_EVENTS = ("high", "max", "oom")


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


@dataclass
class Valve:
    """v2: the valve a managed memcg holds on its OOM domain."""

    cg: CgroupPath
    domain: CgroupPath
    lines: Lines
    user_high: int | None  # the user's own memory.high (None = max)
    written: int | None  # what we wrote to memory.high; None: the user's is lower


@dataclass(frozen=True)
class Tuning:
    headroom: float = 0.10  # v2 valve: share of memory.max
    freeze: bool = True  # v2: freeze the domain when throttling is outrun
    host: HostLines = field(default_factory=HostLines)
    psi_stall_us: int = 150_000
    psi_window_us: int = 1_000_000


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
        self.killer = killer
        self.journal = journal
        self.root = root
        self.dry_run = dry_run
        self.host_delay_ms = host_delay_ms
        self.tuning = tuning if tuning is not None else Tuning()
        self.instance = instance
        self.log = log if log is not None else sys.stderr
        # cgroup -> the fds that notify about it, for the loop to poll
        self.watches: dict[Scope, list[OomControlWatch | PsiTrigger | EventsFileWatch]] = {}
        self.valves: dict[Scope, Valve] = {}
        self._noted: set[Scope] = set()  # cgroups we said we cannot manage (said once)
        self.kernel_log: KernelLog | None = None
        self._has_swap = True  # until managed() has looked
        self.writer = JournalWriter(
            journal, lambda text: self._log(Priority.WARNING, "journal_failed", "-", error=text)
        )

    def open_kernel_log(self) -> None:
        """Follow the kernel log for the kernel's own OOM kills (best effort)."""
        try:
            self.kernel_log = KernelLog(self.env)
        except (MemcgctlError, OSError) as exc:
            self._log(Priority.WARNING, "no_kernel_log", "-", source=self.env.kmsg, error=str(exc))

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
        for cg in self.fs.walk(self.root):
            if cg.is_root:
                continue  # the root has no limit to hold; the host is --host-delay
            try:
                delay = read_setting(self.fs, cg, OOM_DELAY).value
            except Vanished:
                continue
            if delay is not None:
                out[cg] = delay
        if self.host_delay_ms is not None and self.root.is_root:
            out[HOST] = self.host_delay_ms
        return out

    def take_over(self, cg: Scope) -> Managed | None:
        try:
            if isinstance(cg, HostScope):
                return self._take_host()
            if self.fs.version == 2:
                return self._take_valve(cg)
            if not self.dry_run:
                self._pause(cg)
            self.watches[cg] = [OomControlWatch(self.fs, cg)]
            self._noted.discard(cg)
            return Managed("oom", cg)
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

    def _domain(self, cg: CgroupPath) -> CgroupPath | None:
        """The OOM domain of cg inside our root: cg or the nearest ancestor with a
        memory.max."""
        cur: CgroupPath | None = cg
        while cur is not None and not cur.is_root:
            if self.fs.limit(cur) is not None:
                return cur
            if cur == self.root:
                return None
            cur = cur.parent
        return None

    def _take_valve(self, cg: CgroupPath) -> Managed | None:
        domain = self._domain(cg)
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

    def _valve(self, cg: CgroupPath, domain: CgroupPath) -> Valve:
        limit = self.fs.limit(domain)
        if limit is None:
            raise Vanished(domain)
        ln = lines(limit, self.tuning.headroom)
        user = self.fs.high(domain)
        mark = owner.read_mark(self.fs, domain)
        if mark is not None and "valve" in mark and str(user) == str(mark["valve"]):
            # a valve a (dead) daemon left: the user's own value is the one it marked
            user = self._marked_high(mark)
        return Valve(cg, domain, ln, user, high_to_write(user, ln.line))

    def _install(self, v: Valve) -> None:
        """Write memory.high, our mark first (crash-safe order)."""
        mark = self._adopt_mark(v.domain)
        if "memory.high" not in mark or v.user_high != self._marked_high(mark):
            mark["memory.high"] = "max" if v.user_high is None else str(v.user_high)
        if v.written is None:
            mark.pop("valve", None)
        else:
            mark["valve"] = str(v.written)
        owner.write_mark(self.fs, v.domain, mark)
        if v.written is not None:
            self.fs.write(v.domain, V2_HIGH, str(v.written))

    def _adopt_mark(self, cg: CgroupPath) -> dict[str, Any]:
        """Our mark on cg: the existing one of this instance, a dead instance's taken
        over with the values it recorded (they are the user's), or a new one.  A live
        instance's mark means another daemon holds cg: refuse."""
        mark = owner.read_mark(self.fs, cg)
        if mark is None:
            return {"instance": self.instance}
        other = str(mark.get("instance", ""))
        if other and other != self.instance and owner.instance_alive(self.proc, other):
            raise OwnedElsewhere(f"{cg}: held by the running daemon {other}")
        mark["instance"] = self.instance
        return mark

    @staticmethod
    def _marked_high(mark: dict[str, Any]) -> int | None:
        text = str(mark.get("memory.high", "max"))
        return int(text) if text.isdigit() else None

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

    def _refresh(self, v: Valve) -> Valve:
        """Follow the user: a changed memory.max moves the valve; a memory.high written
        by someone else becomes the user's own value."""
        limit = self.fs.limit(v.domain)
        high = self.fs.high(v.domain)
        ours = v.written if v.written is not None and not self.dry_run else v.user_high
        changed_high = high != ours
        if limit is None:
            raise Vanished(v.domain)
        if limit == v.lines.limit and not changed_high:
            return v
        user = high if changed_high else v.user_high
        ln = lines(limit, self.tuning.headroom)
        new = dataclasses.replace(v, lines=ln, user_high=user, written=high_to_write(user, ln.line))
        if not self.dry_run:
            self._install(new)
        self.valves[v.cg] = new
        self._log(
            Priority.NOTICE,
            "valve_moved",
            v.cg,
            domain=v.domain,
            limit=limit,
            valve=ln.line,
            memory_high=new.written if new.written is not None else user,
        )
        return new

    def _pause(self, cg: CgroupPath) -> None:
        """v1: oom_kill_disable=1, with our mark written first (crash-safe order)."""
        mark = self._adopt_mark(cg)
        if "oom_kill_disable" not in mark:
            mark["oom_kill_disable"] = self.fs.oom_control(cg).get("oom_kill_disable", 0)
        owner.write_mark(self.fs, cg, mark)
        self.fs.write(cg, V1_OOM_CONTROL, "1")

    def release(self, cg: Scope) -> None:
        self._close(cg)
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
        self.writer.close()
        for cg in list(self.watches):
            self._close(cg)
        if self.kernel_log is not None:
            self.kernel_log.close()
            self.kernel_log = None

    # -- notifications (for the loop) ----------------------------------------------------
    def fds(self) -> dict[int, Scope | str]:
        """fd -> the cgroup it notifies about ("" for the kernel log)."""
        out: dict[int, Scope | str] = {
            w.fileno(): cg for cg, ws in self.watches.items() for w in ws if w.fileno() >= 0
        }
        if self.kernel_log is not None and self.kernel_log.fileno() >= 0:
            out[self.kernel_log.fileno()] = ""
        return out

    def poll_events(self, fd: int) -> int:
        """The poll mask to wait for on fd: POLLIN for a v1 eventfd; POLLPRI only for
        PSI triggers and memory.events, whose poll() always reports POLLIN (the kernel's
        DEFAULT_POLLMASK) and signals with POLLPRI."""
        for ws in self.watches.values():
            for w in ws:
                if w.fileno() == fd:
                    return select.POLLIN if isinstance(w, OomControlWatch) else select.POLLPRI
        if self.kernel_log is not None and fd == self.kernel_log.fileno():
            return select.POLLIN
        return select.POLLPRI

    def consume(self, cg: Scope, fd: int, error: bool) -> str:
        """Read what woke us on fd: "fired" (look at cg now), "quiet" (nothing that
        matters, e.g. another memory.events counter), or "gone" (cgroup removed)."""
        for w in self.watches.get(cg, []):
            if w.fileno() != fd:
                continue
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
                avail, total = host_available(self.proc.meminfo_kb())
                hl = self.tuning.host
                return Level(host_level(avail, total, hl), host_poll_interval(avail, total, hl))
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

    def freeze_domain(self, domain: CgroupPath, frozen: bool) -> bool:
        """cgroup.freeze on domain, the previous value in our mark first."""
        try:
            mark = self._adopt_mark(domain)
            if frozen:
                own = os.getpid()
                if any(pid == own for pid, _ in self.fs.subtree_procs(domain)):
                    self._log(
                        Priority.WARNING,
                        "cannot_freeze",
                        domain,
                        reason="the daemon runs inside it",
                    )
                    return False
                if "cgroup.freeze" not in mark:
                    mark["cgroup.freeze"] = 1 if self.fs.freeze_value(domain) else 0
                    owner.write_mark(self.fs, domain, mark)
                self.fs.set_freeze(domain, True)
            else:
                prev = mark.pop("cgroup.freeze", 0)
                self.fs.set_freeze(domain, str(prev) == "1")
                owner.write_mark(self.fs, domain, mark)
            return True
        except (Vanished, MemcgctlError, OSError) as exc:
            self._log(Priority.ERR, "freeze_failed", domain, error=str(exc))
            return False

    def snapshot(self, cg: CgroupPath) -> Snapshot:
        return self.env.snapshot(cg)

    def alive(self, pids: Iterable[int]) -> list[int]:
        out = []
        for pid in pids:
            try:
                if self.proc.status(pid).has_mm:  # a zombie has given its memory back
                    out.append(pid)
            except Vanished:
                continue
        return out

    # -- actions ----------------------------------------------------------------------
    def kill(self, decision: Decision) -> list[int]:
        if decision.kill_group is not None:
            return self.kill_all(decision.kill_group)
        victim = decision.victim
        if victim is None:
            return []
        try:
            ok = self.killer.kill_process(victim.pid, victim.cgroup, signal.SIGKILL, exact=True)
        except MemcgctlError as exc:
            self._log(Priority.ERR, "kill_failed", victim.cgroup, pid=victim.pid, error=str(exc))
            return []
        if not ok:
            return []
        self._journal_kills([(victim.pid, victim.comm, victim.cgroup, PIDFD)], decision.oom_root)
        return [victim.pid]

    def kill_all(self, cg: CgroupPath) -> list[int]:
        try:
            report = self.killer.kill_all(cg, timeout=5.0)
        except MemcgctlError as exc:
            self._log(Priority.ERR, "kill_all_failed", cg, error=str(exc))
            return []
        self._journal_kills([(k.pid, k.comm, k.cgroup, k.mechanism) for k in report.killed], cg)
        return [k.pid for k in report.killed]

    def _journal_kills(
        self, killed: list[tuple[int, str, CgroupPath, str]], target: CgroupPath
    ) -> None:
        """(pid, comm, cgroup, mechanism) of each process killed (SIGKILL)."""
        now = utc_now_iso()
        records: list[Event] = [
            user_kill(
                time=now,
                cgroup=cg,
                pid=pid,
                comm=comm,
                signal="SIGKILL",
                mechanism=mechanism,
                target=target,
                by="daemon",
            )
            for pid, comm, cg, mechanism in killed
        ]
        self._append(records)

    def emit(self, event: DaemonRecord) -> None:
        record = journaled(event)
        self._log(
            _PRIORITY.get(str(event["kind"]), Priority.INFO),
            str(event["kind"]),
            str(event["cgroup"]),
            **{k: v for k, v in event.items() if k not in ("kind", "cgroup")},
        )
        self._append([record])

    def _append(self, records: list[Event]) -> None:
        """Hand records to the journal writer: a kill never waits on the journal."""
        self.writer.put(records)

    def _log(self, prio: Priority, kind: str, cg: str, **fields: Any) -> None:
        """One line per event on stderr, with a syslog priority prefix journald reads;
        values another user controls (cgroup names, comm) are quoted."""
        parts = [prefixed(prio, f"{kind} cgroup={log_value(cg)}")]
        parts += [
            f"{k}={log_value(' / '.join(map(str, v)) if isinstance(v, list) else v)}"
            for k, v in fields.items()
        ]
        with contextlib.suppress(OSError):  # stderr gone: keep enforcing anyway
            self.log.write(" ".join(parts) + "\n")
            self.log.flush()


__all__ = ["CLEAR", "HOST", "JournalWriter", "RealPorts", "Tuning", "Valve", "log_value"]


class JournalWriter:
    """Appends to the journal from a thread of its own, so that a held journal lock
    (another user cannot hold it: statedir.py; a slow disk can) delays the record, never
    the next kill.  Records wait in memory (at most MAX_PENDING) and are retried; on
    close, what is left gets one last bounded try."""

    MAX_PENDING = 10_000
    TIMEOUT = 2.0

    def __init__(self, journal: Journal, warn: Callable[[str], None]) -> None:
        self.journal = journal
        self.warn = warn
        self._queue: queue.SimpleQueue[list[Event] | None] = queue.SimpleQueue()
        self._pending: list[Event] = []
        self._thread = threading.Thread(target=self._run, name="journal", daemon=True)
        self._thread.start()

    def put(self, records: list[Event]) -> None:
        self._queue.put(records)

    def _run(self) -> None:
        failing = False
        while True:
            try:
                item = self._queue.get(timeout=1.0 if self._pending else None)
            except queue.Empty:
                item = []
            if item is None:
                self._flush(failing)
                return
            self._pending += item
            while True:  # take whatever else is queued: one append for a burst
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._flush(failing)
                    return
                self._pending += more
            failing = not self._flush(failing)

    def _flush(self, failing: bool) -> bool:
        if not self._pending:
            return True
        try:
            self.journal.append(self._pending, timeout=self.TIMEOUT)
        except (MemcgctlError, OSError) as exc:
            if not failing:
                self.warn(f"{exc}; {len(self._pending)} record(s) kept for a retry")
            del self._pending[: max(len(self._pending) - self.MAX_PENDING, 0)]
            return False
        self._pending = []
        return True

    def close(self, timeout: float = 2 * TIMEOUT + 1) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


class KernelLog:
    """The kernel log from now on (history skipped): OOM kills as they are logged, so
    the daemon can report the kernel's own victims (shadow mode, and kills it lost)."""

    def __init__(self, env: Env) -> None:
        from memcgctl.kernel.kmsgdev import KmsgReader
        from memcgctl.logic.kmsgparse import OomAssembler

        self.reader = KmsgReader(env.kmsg).open()
        self.reader.read_available()  # the history: not ours to report
        self.asm = OomAssembler(env.proc.boot_time(), env.proc.boot_id())

    def fileno(self) -> int:
        return self.reader.fileno() if self.reader.is_device else -1

    def kills(self) -> list[KernelEvent]:
        from memcgctl.logic.kmsgparse import join_continuations, may_matter, parse_records

        raws = [r for r in self.reader.read_available() if may_matter(r)]
        out: list[KernelEvent] = []
        for rec in join_continuations(parse_records(raws)):
            out += [e for e in self.asm.feed(rec) if e.get("kind") == "oom_kill"]
        return out

    def close(self) -> None:
        self.reader.close()


def victim_info(ev: KernelEvent, cgroup: CgroupPath) -> ProcessInfo:
    """The kernel's victim as a process record, from its kill line (it is gone from
    /proc by now).  Its process badness is not known any more: oom_score_adj -1000
    counts as 1000, anything else as the default."""
    from memcgctl.vocab.constants import BADNESS_DEFAULT, BADNESS_NEVER

    adj = int(ev.get("oom_score_adj") or 0)
    return ProcessInfo(
        pid=int(ev["pid"]),
        comm=str(ev.get("comm", "?")),
        cgroup=cgroup,
        uid=int(ev.get("uid") or 0),
        rss_anon_kb=int(ev.get("anon_rss_kb") or 0),
        rss_file_kb=int(ev.get("file_rss_kb") or 0),
        rss_shmem_kb=int(ev.get("shmem_rss_kb") or 0),
        swap_kb=0,
        pgtables_kb=int(ev.get("pgtables_kb") or 0),
        oom_score_adj=adj,
        badness=BADNESS_NEVER if adj == -1000 else BADNESS_DEFAULT,
        badness_source="oom_score_adj" if adj == -1000 else "default",
        killable=True,
    )
