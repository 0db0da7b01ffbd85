"""The daemon's real ports: cgroup files, eventfds, PSI triggers, the killer, the journal.

Ownership: before setting ``oom_kill_disable=1`` on a v1 memcg we write the xattr
``trusted.memcgctl.daemon_prev`` (the value we found).  Releasing restores that value and
removes the mark, so after a crash a restarted daemon (or ``memcgctl daemon --release``,
run by systemd's ExecStopPost) knows exactly which memcgs it paused.
"""

from __future__ import annotations

import contextlib
import select
import signal
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from memcgctl.actions.kill import Killer
from memcgctl.daemon.core import Event
from memcgctl.env import Env
from memcgctl.errors import MemcgctlError, Vanished
from memcgctl.journal import Journal, utc_now_iso
from memcgctl.model import Snapshot
from memcgctl.policy import Decision
from memcgctl.readers.cgroupfs import V1_OOM_CONTROL, V2_EVENTS, V2_PRESSURE
from memcgctl.readers.notify import EventsFileWatch, OomControlWatch, PsiTrigger
from memcgctl.store import OOM_DELAY, read_setting

OWNER_MARK = "trusted.memcgctl.daemon_prev"
HOST = "/"
# v1: a memcg is "at its limit" (its own OOM, not an ancestor's) when usage is this close
AT_LIMIT_SLACK = 2 << 20
_PRIORITY = {"daemon_kill": 4, "daemon_escalated": 4, "under_oom": 5, "no_victim": 3}


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


class RealPorts:
    def __init__(
        self,
        env: Env,
        killer: Killer,
        journal: Journal,
        root: str = "/",
        dry_run: bool = False,
        host_delay_ms: int | None = None,
        psi_stall_us: int = 150_000,
        psi_window_us: int = 1_000_000,
        log: TextIO | None = None,
    ) -> None:
        self.env = env
        self.fs = env.fs
        self.killer = killer
        self.journal = journal
        self.root = root
        self.dry_run = dry_run
        self.host_delay_ms = host_delay_ms
        self.psi_stall_us = psi_stall_us
        self.psi_window_us = psi_window_us
        self.log = log if log is not None else sys.stderr
        # cgroup -> the fds that notify about it, for the loop to poll
        self.watches: dict[str, list[OomControlWatch | PsiTrigger | EventsFileWatch]] = {}

    # -- the managed set ---------------------------------------------------------------
    def managed(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for cg in self.fs.walk(self.root):
            if cg == "/":
                continue  # v1 cannot disable the root's OOM killer; the host is --host-delay
            try:
                delay = read_setting(self.fs, cg, OOM_DELAY).value
            except Vanished:
                continue
            if delay is not None:
                out[cg] = delay
        if self.host_delay_ms is not None and self.root == "/":
            out[HOST] = self.host_delay_ms
        return out

    def marked(self) -> list[str]:
        """Memcgs below root that carry our ownership mark (e.g. after a crash)."""
        out = []
        for cg in self.fs.walk(self.root):
            try:
                if self.fs.get_xattr(cg, OWNER_MARK) is not None:
                    out.append(cg)
            except Vanished:
                continue
        return out

    def release_orphans(self) -> list[str]:
        """Unpause marked memcgs that no longer have a delay (changed while we were
        down); the others are adopted by the first rescan."""
        wanted = self.managed()
        released = [cg for cg in self.marked() if cg not in wanted and self.unpause(cg)]
        for cg in released:
            self.emit({"kind": "daemon_released", "cgroup": cg, "reason": "orphaned mark"})
        return released

    def take_over(self, cg: str, adopt_under_oom: bool) -> str | None:
        try:
            if cg == HOST:
                path = str(self.env.proc_root / "pressure" / "memory")
                self.watches[cg] = [PsiTrigger(path, self.psi_stall_us, self.psi_window_us)]
                return "psi"
            if self.fs.version == 2:
                watches: list[OomControlWatch | PsiTrigger | EventsFileWatch] = [
                    PsiTrigger(
                        f"{self.fs.path(cg)}/{V2_PRESSURE}", self.psi_stall_us, self.psi_window_us
                    )
                ]
                ev = EventsFileWatch(self.fs, cg, V2_EVENTS)
                watches.append(ev)
                self.watches[cg] = watches
                return "psi"
            if not self.dry_run:
                self._pause(cg)
            self.watches[cg] = [OomControlWatch(self.fs, cg)]
            return "oom"
        except (Vanished, OSError, MemcgctlError) as exc:
            self._log(3, "cannot_manage", cg, error=str(exc))
            self._close(cg)
            return None

    def _pause(self, cg: str) -> None:
        """oom_kill_disable=1, with our mark written first (crash-safe order)."""
        if self.fs.get_xattr(cg, OWNER_MARK) is None:
            prev = self.fs.oom_control(cg).get("oom_kill_disable", 0)
            self.fs.set_xattr(cg, OWNER_MARK, str(prev).encode())
        self.fs.write(cg, V1_OOM_CONTROL, "1")

    def release(self, cg: str) -> None:
        self._close(cg)
        if cg == HOST or self.fs.version != 1:
            return
        self.unpause(cg)

    def unpause(self, cg: str) -> bool:
        """Restore oom_kill_disable from our mark and drop the mark; False if unmarked."""
        try:
            raw = self.fs.get_xattr(cg, OWNER_MARK)
            if raw is None:
                return False
            prev = "1" if raw.strip() == b"1" else "0"
            # writing 0 also wakes the tasks sleeping in the OOM: the kernel decides again
            self.fs.write(cg, V1_OOM_CONTROL, prev)
            self.fs.remove_xattr(cg, OWNER_MARK)
            return True
        except (Vanished, MemcgctlError):
            return False

    def _close(self, cg: str) -> None:
        for w in self.watches.pop(cg, []):
            w.close()

    def close_all(self) -> None:
        for cg in list(self.watches):
            self._close(cg)

    # -- notifications (for the loop) ----------------------------------------------------
    def fds(self) -> dict[int, str]:
        return {w.fileno(): cg for cg, ws in self.watches.items() for w in ws if w.fileno() >= 0}

    def poll_events(self, fd: int) -> int:
        """The poll mask to wait for on fd: POLLIN for a v1 eventfd; POLLPRI only for
        PSI triggers and memory.events, whose poll() always reports POLLIN (the kernel's
        DEFAULT_POLLMASK) and signals with POLLPRI."""
        for ws in self.watches.values():
            for w in ws:
                if w.fileno() == fd:
                    return select.POLLIN if isinstance(w, OomControlWatch) else select.POLLPRI
        return select.POLLPRI

    def consume(self, cg: str, fd: int, error: bool) -> str:
        """Read what woke us on fd: "fired" (OOM or pressure for cg), "quiet" (nothing
        that matters, e.g. another memory.events counter), or "gone" (cgroup removed)."""
        for w in self.watches.get(cg, []):
            if w.fileno() != fd:
                continue
            if isinstance(w, OomControlWatch):
                # v1 also fires once when the cgroup is removed
                if w.drain() == 0:
                    return "quiet"
                return "fired" if self.fs.exists(cg) else "gone"
            if isinstance(w, EventsFileWatch):
                # kernfs wakes with POLLPRI|POLLERR on every change: compare counters
                try:
                    values = w.read()
                except Vanished:
                    return "gone"
                old, w.values = w.values, values
                grew = any(values.get(k, 0) > old.get(k, 0) for k in ("max", "oom"))
                return "fired" if grew else "quiet"
            return "gone" if error else "fired"  # PSI: POLLERR means the trigger is gone
        return "quiet"

    # -- state ------------------------------------------------------------------------
    def under_oom(self, cg: str) -> bool:
        try:
            return bool(self.fs.oom_control(cg).get("under_oom", 0))
        except Vanished:
            return False

    def at_limit(self, cg: str) -> bool:
        try:
            usage, limit = self.fs.usage(cg), self.fs.limit(cg)
        except Vanished:
            return False
        return usage is not None and limit is not None and usage + AT_LIMIT_SLACK >= limit

    def snapshot(self, cg: str) -> Snapshot:
        return self.env.snapshot(cg)

    def alive(self, pids: Iterable[int]) -> list[int]:
        out = []
        for pid in pids:
            try:
                if self.env.proc.status(pid).has_mm:  # a zombie has given its memory back
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
            self._log(3, "kill_failed", victim.cgroup, pid=victim.pid, error=str(exc))
            return []
        if not ok:
            return []
        self._journal_kills([(victim.pid, victim.comm, victim.cgroup)], decision.oom_root)
        return [victim.pid]

    def kill_all(self, cg: str) -> list[int]:
        try:
            report = self.killer.kill_all(cg, timeout=5.0)
        except MemcgctlError as exc:
            self._log(3, "kill_all_failed", cg, error=str(exc))
            return []
        self._journal_kills([(k.pid, k.comm, k.cgroup) for k in report.killed], cg)
        return [k.pid for k in report.killed]

    def _journal_kills(self, killed: list[tuple[int, str, str]], target: str) -> None:
        now = utc_now_iso()
        records = [
            {
                "time": now,
                "kind": "user_kill",
                "cgroup": cg,
                "source": "journal",
                "pid": pid,
                "comm": comm,
                "signal": "SIGKILL",
                "target": target,
                "by": "daemon",
            }
            for pid, comm, cg in killed
        ]
        self._append(records)

    def emit(self, event: Event) -> None:
        record = {"time": utc_now_iso(), "source": "journal", "by": "daemon", **event}
        self._log(
            _PRIORITY.get(str(event["kind"]), 6),
            str(event["kind"]),
            str(event["cgroup"]),
            **{k: v for k, v in event.items() if k not in ("kind", "cgroup")},
        )
        self._append([record])

    def _append(self, records: list[dict[str, Any]]) -> None:
        try:
            self.journal.append(records)
        except MemcgctlError as exc:
            self._log(4, "journal_failed", "-", error=str(exc))

    def _log(self, prio: int, kind: str, cg: str, **fields: Any) -> None:
        """One line per event on stderr, with a syslog priority prefix journald reads."""
        parts = [f"<{prio}>{kind} cgroup={cg}"]
        for k, v in fields.items():
            if k == "reasons" and isinstance(v, list):
                v = " / ".join(str(x) for x in v)
            text = str(v)
            parts.append(f"{k}={text!r}" if (" " in text or not text) else f"{k}={text}")
        with contextlib.suppress(OSError):  # stderr gone: keep enforcing anyway
            self.log.write(" ".join(parts) + "\n")
            self.log.flush()
