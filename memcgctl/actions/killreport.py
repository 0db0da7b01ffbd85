"""What a kill did: the mechanism names (``cgroup.kill``, ``cgroup.freeze``, the v1
``freezer``, ``procs`` rounds, and ``pidfd`` for one process), the report of a kill-all
(:class:`Target`, :class:`Killed`, :class:`KillReport`, with their JSON forms) and the
journal records made from it.  No I/O: the :class:`~memcgctl.actions.kill.Killer` fills
the report, the command prints and journals it."""

from __future__ import annotations

from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.records import UserKill, user_kill, utc_now_iso
from memcgctl.vocab.signals import signal_name
from memcgctl.vocab.structs import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

KILL = "cgroup.kill"
FREEZE_V2 = "cgroup.freeze"
FREEZER_V1 = "freezer"
PROCS = "procs"
# one process signalled through its pidfd (the daemon's victim; not a kill-all mechanism)
PIDFD = "pidfd"
# --mechanism choices -> what they may resolve to
CHOICES = ("auto", "kill", "freeze", "procs")


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
