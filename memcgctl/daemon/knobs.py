"""The knobs the daemon's ports change on cgroups, each under an ownership mark: v1
``oom_kill_disable`` (the pause), v2 ``memory.high`` (the valve on a memcg's OOM
domain, which follows the user's ``memory.max`` and ``memory.high``) and
``cgroup.freeze``.

Ownership (owner.py): before changing a knob the port writes a mark holding the value
it found and this instance's id; release restores exactly that and removes the mark,
so after a crash the guardian, a restarted daemon or ``memcgctl daemon --release``
(systemd's ExecStopPost) knows what to put back.  :class:`Knobs` is the part of the real
ports (``daemon/ports.py``) that writes them; the ports keep the valves it returns.
"""

from __future__ import annotations

import os

from memcgctl.daemon import oomd, owner
from memcgctl.daemon.journaling import Recorder
from memcgctl.daemon.valve import Lines, Tuning, high_to_write, lines, low_high
from memcgctl.kernel.cgroupfiles import V1_OOM_CONTROL, V2_HIGH
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.procfs import ProcFs
from memcgctl.render.logprio import Priority
from memcgctl.vocab import structs
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import MemcgctlError, OwnedElsewhere, Vanished
from memcgctl.vocab.structs import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@dataclass
class Valve:
    """v2: the valve a managed memcg holds on its OOM domain."""

    cg: CgroupPath
    domain: CgroupPath
    lines: Lines
    user_high: int | None  # the user's own memory.high (None = max)
    written: int | None  # what we wrote to memory.high; None: the user's is lower
    # the lower step (delay 0: memory.high at the near line while far below it, so the
    # kernel's high event says "near"; daemon/valve.py); None: no lower step
    low: int | None = None
    lowered: bool = False  # memory.high is at ``low`` now
    early: bool = False  # the core wants the lower step (a watch that plans ahead)

    @property
    def holding(self) -> int | None:
        """What memory.high holds by us now (None: the user's own value)."""
        return self.low if self.lowered else self.written


def _valve(cg: CgroupPath, domain: CgroupPath, ln: Lines, user: int | None) -> Valve:
    """The valve for the lines and the user's memory.high, raised: a lower step only
    where we write the valve at all (the user's own memory.high, when lower, stands)."""
    written = high_to_write(user, ln.line)
    return Valve(cg, domain, ln, user, written, low_high(ln) if written is not None else None)


class Knobs:
    """Marks, the valve, the pause and the freeze of one daemon instance.  In a dry run
    the valve is computed and followed but never written."""

    def __init__(
        self,
        fs: CgroupFs,
        proc: ProcFs,
        instance: str,
        tuning: Tuning,
        recorder: Recorder,
        dry_run: bool = False,
    ) -> None:
        self.fs = fs
        self.proc = proc
        self.instance = instance
        self.tuning = tuning
        self.recorder = recorder
        self.dry_run = dry_run
        self._omit_failed: set[CgroupPath] = set()  # said once: refused user.oomd_omit

    def valve(self, cg: CgroupPath, domain: CgroupPath) -> Valve:
        limit = self.fs.limit(domain)
        if limit is None:
            raise Vanished(domain)
        ln = lines(limit, self.tuning.headroom)
        user = self.fs.high(domain)
        mark = owner.read_mark(self.fs, domain)
        if mark is not None and "valve" in mark and str(user) in owner.valve_values(mark):
            # a valve a (dead) daemon left: the user's own value is the one it marked
            user = self._marked_high(mark)
        return _valve(cg, domain, ln, user)

    def install(self, v: Valve) -> None:
        """Write memory.high, our mark first (crash-safe order)."""
        mark = self._adopt_mark(v.domain)
        if "memory.high" not in mark or v.user_high != self._marked_high(mark):
            mark["memory.high"] = "max" if v.user_high is None else str(v.user_high)
        if v.written is None:
            mark.pop("valve", None)
        else:
            mark["valve"] = str(v.written)
        if v.low is None:  # both steps are in the mark: a step is one write, no mark
            mark.pop("valve_low", None)
        else:
            mark["valve_low"] = str(v.low)
        owner.write_mark(self.fs, v.domain, mark)
        if v.holding is not None:
            self.fs.write(v.domain, V2_HIGH, str(v.holding))

    def step(self, v: Valve, lowered: bool) -> Valve:
        """Put memory.high at the valve's lower step or raise it to the valve (both
        values are in our mark already); the valve to keep."""
        if v.low is None or v.written is None or lowered == v.lowered or self.dry_run:
            return v
        if self.fs.high(v.domain) != v.holding:
            return v  # written by the user since our look: theirs (the next refresh takes it)
        new = structs.replace(v, lowered=lowered)
        self.fs.write(v.domain, V2_HIGH, str(new.holding))
        kind = "valve_lowered" if lowered else "valve_raised"
        self.recorder.line(Priority.INFO, kind, v.cg, domain=v.domain, memory_high=new.holding)
        return new

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

    def refresh(self, v: Valve) -> Valve:
        """Follow the user: a changed memory.max moves the valve; a memory.high written
        by someone else becomes the user's own value.  The valve to keep (v itself when
        nothing changed)."""
        limit = self.fs.limit(v.domain)
        high = self.fs.high(v.domain)
        ours = v.holding if v.written is not None and not self.dry_run else v.user_high
        changed_high = high != ours
        if limit is None:
            raise Vanished(v.domain)
        if limit == v.lines.limit and not changed_high:
            return v
        user = high if changed_high else v.user_high
        ln = lines(limit, self.tuning.headroom)
        new = structs.replace(_valve(v.cg, v.domain, ln, user), early=v.early)
        if not self.dry_run:
            self.install(new)
        self.recorder.line(
            Priority.NOTICE,
            "valve_moved",
            v.cg,
            domain=v.domain,
            limit=limit,
            valve=ln.line,
            memory_high=new.written if new.written is not None else user,
        )
        return new

    def omit_from_oomd(self, domain: CgroupPath) -> None:
        """``user.oomd_omit=1`` on systemd-oomd's candidates inside a valve's domain,
        under our mark (daemon/oomd.py): one killer per episode, the policy's.  A
        candidate already omitted by someone else (systemd's ``ManagedOOMPreference=
        omit``) is left alone; one root does not own is skipped (oomd ignores it).
        Best effort: a cgroup that refuses the xattr is said once, the valve stays."""
        if self.dry_run or self.fs.version != 2:
            return
        for cg in oomd.candidates(self.fs, domain):
            try:
                if not oomd.honoured(self.fs, cg):
                    continue
                current = self.fs.get_xattr(cg, oomd.OMIT)
                if current == b"1":
                    mark = owner.read_mark(self.fs, cg)
                    if mark is None or oomd.OMIT not in mark or mark["instance"] == self.instance:
                        continue  # someone else's omit, or ours already
                    # else a dead instance's: adopted below with what it recorded
                mark = self._adopt_mark(cg)
                if oomd.OMIT not in mark:
                    mark[oomd.OMIT] = current.decode("utf-8", "replace") if current else ""
                owner.write_mark(self.fs, cg, mark)
                self.fs.set_xattr(cg, oomd.OMIT, b"1")
            except Vanished:
                continue
            except (MemcgctlError, OSError) as exc:
                if cg not in self._omit_failed:
                    self._omit_failed.add(cg)
                    self.recorder.line(
                        Priority.WARNING, "cannot_omit_from_oomd", cg, error=str(exc)
                    )
                continue
            self.recorder.line(Priority.INFO, "oomd_omitted", cg, domain=domain)

    def give_back_to_oomd(self, domain: CgroupPath, held: list[CgroupPath]) -> None:
        """Release our ``user.oomd_omit`` marks below a released valve's domain (its
        own mark is the caller's), not inside a nested valve we still hold."""
        for cg in self.fs.walk(domain):
            if cg == domain or any(d.contains(cg) for d in held):
                continue
            try:
                mark = owner.read_mark(self.fs, cg)
                if mark is not None and mark.get("instance") == self.instance:
                    owner.restore(self.fs, cg, mark)
            except (Vanished, MemcgctlError, OSError):
                continue

    def pause(self, cg: CgroupPath) -> None:
        """v1: oom_kill_disable=1, with our mark written first (crash-safe order)."""
        mark = self._adopt_mark(cg)
        if "oom_kill_disable" not in mark:
            mark["oom_kill_disable"] = self.fs.oom_control(cg).get("oom_kill_disable", 0)
        owner.write_mark(self.fs, cg, mark)
        self.fs.write(cg, V1_OOM_CONTROL, "1")

    def freeze_domain(self, domain: CgroupPath, frozen: bool) -> bool:
        """cgroup.freeze on domain, the previous value in our mark first."""
        try:
            mark = self._adopt_mark(domain)
            if frozen:
                own = os.getpid()
                if any(pid == own for pid, _ in self.fs.subtree_procs(domain)):
                    self.recorder.line(
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
        except Vanished:  # the domain was removed: nothing left to freeze or thaw
            return False
        except (MemcgctlError, OSError) as exc:
            self.recorder.line(Priority.ERR, "freeze_failed", domain, error=str(exc))
            return False
