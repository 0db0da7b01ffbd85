"""The reasons behind a victim choice, as data: a code and the numbers involved.

The policies (:mod:`memcgctl.logic.priority`, :mod:`memcgctl.logic.kernelheuristic`)
return these and never build a sentence; the words are made in the rendering layer
(:mod:`memcgctl.render.reasontext`, used by :mod:`memcgctl.render.explain`), for
``predict-victim --explain`` and ``--json``, ``explain-kill`` and the daemon's journal.
Pure data.
"""

from __future__ import annotations

from enum import Enum

from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.reportnotes import ReportNote
from memcgctl.vocab.structs import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal, TypeAlias

Kind: TypeAlias = 'Literal["cgroup", "process"]'  # (a string: no typing at run time)


class Skip(Enum):
    """Why a candidate can never be chosen."""

    ALREADY_CHOSEN = "already_chosen"  # excluded by the caller (next in line)
    INIT = "init"
    NO_MEMORY = "no_memory"  # a kernel thread, or exiting
    ADJ_NEVER = "adj_never"  # oom_score_adj -1000
    BADNESS_NEVER = "badness_never"  # badness 1000
    NOTHING_INSIDE = "nothing_inside"  # a cgroup with nothing killable below it


class Tie(Enum):
    """The tie break that decided a level of the priority walk."""

    CGROUP_BEFORE_PROCESS = "cgroup_before_process"
    LOWEST_PID_INSIDE = "lowest_pid_inside"  # cgroups: same badness and usage
    LARGEST_USAGE = "largest_usage"
    LOWEST_PID = "lowest_pid"  # processes: same badness and rss
    LARGEST_RSS = "largest_rss"


class Lost(Enum):
    """Why an eligible candidate lost to the chosen one."""

    HIGHER_BADNESS = "higher_badness"
    CGROUP_FIRST = "cgroup_first"  # same badness: a cgroup goes before a process
    SMALLER_USAGE = "smaller_usage"
    HIGHER_PID_INSIDE = "higher_pid_inside"  # same badness and usage
    SMALLER_RSS = "smaller_rss"
    HIGHER_PID = "higher_pid"  # same badness and rss


@dataclass(frozen=True)
class Win:
    """Why the chosen candidate won: the lowest badness, and whether a process beat
    sibling cgroups (strictly lower), and the tie break if there was one."""

    badness: int
    beat_cgroups: bool = False
    tie: Tie | None = None


@dataclass(frozen=True)
class Verdict:
    """The outcome of one candidate at one level: ``win`` for the chosen one (None with
    ``only``: the only killable candidate), ``lost`` for the others with the numbers
    compared (``badness``/``chosen_badness``, or the candidate's ``usage_bytes``/
    ``rss_kb``), or ``skip``."""

    skip: Skip | None = None
    only: bool = False
    win: Win | None = None
    lost: Lost | None = None
    badness: int = 0
    chosen_badness: int = 0
    usage_bytes: int = 0
    rss_kb: int = 0


class Caveat(Enum):
    """Where a prediction may be wrong."""

    SCAN_ORDER_MEMCG = "scan_order_memcg"
    SCAN_ORDER_HOST = "scan_order_host"
    ALLOCATING_TASK = "allocating_task"  # vm.oom_kill_allocating_task=1, host OOM
    RSS_APPROXIMATE = "rss_approximate"
    SHARED_MM = "shared_mm"
    VICTIM_EXITING = "victim_exiting"
    TASK_ORIGIN = "task_origin"
    TABLE_MEMCG_VICTIM_ONLY = "table_memcg_victim_only"  # explain-kill: a saved report
    AS_PRINTED = "as_printed"  # explain-kill: a saved report


# -- the steps of a decision (Decision.reasons) ----------------------------------------


@dataclass(frozen=True)
class NotInSnapshot:
    cgroup: CgroupPath


@dataclass(frozen=True)
class NoKillableAt:
    """Priority walk: nothing killable at this level."""

    cgroup: CgroupPath


@dataclass(frozen=True)
class LevelChoice:
    """Priority walk: at ``cgroup``, ``eligible`` of ``candidates`` could die and the
    chosen one (a cgroup ``path``, or a process ``pid`` and ``comm``) won.
    ``unchecked``: candidates with a higher badness than the chosen one that a brief
    walk (the daemon's) ranked by their badness alone, without looking inside."""

    cgroup: CgroupPath
    eligible: int
    candidates: int
    kind: Kind
    path: CgroupPath | None  # the chosen cgroup
    pid: int | None  # or the chosen process
    comm: str | None
    win: Win
    unchecked: int = 0


@dataclass(frozen=True)
class GroupKill:
    """``memory.oom.group``: ``pids`` processes of ``group`` die together."""

    group: CgroupPath
    pids: int


@dataclass(frozen=True)
class NoLimit:
    """Kernel, memcg OOM of a cgroup without a limit: points use the host's pages."""

    cgroup: CgroupPath
    totalpages: int


@dataclass(frozen=True)
class MemcgPages:
    cgroup: CgroupPath
    limit_bytes: int
    totalpages: int


@dataclass(frozen=True)
class HostPages:
    totalpages: int


@dataclass(frozen=True)
class ScoredCount:
    scored: int
    never_eligible: int


@dataclass(frozen=True)
class NoKillableProcess:
    pass


@dataclass(frozen=True)
class MostPoints:
    pid: int
    comm: str
    points: int
    rss_pages: int
    swap_pages: int
    pgtable_pages: int
    adj_pages: int


@dataclass(frozen=True)
class PointsTie:
    """The runner-up ``pid`` has the victim's ``points``: the last scanned is kept."""

    pid: int
    points: int


Reason = (
    NotInSnapshot
    | NoKillableAt
    | LevelChoice
    | GroupKill
    | NoLimit
    | MemcgPages
    | HostPages
    | ScoredCount
    | NoKillableProcess
    | MostPoints
    | PointsTie
    | ReportNote  # a finding about a saved kernel report (memcgctl.logic.postmortem)
)
