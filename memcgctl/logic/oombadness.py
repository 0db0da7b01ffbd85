"""The kernel's ``oom_badness`` (``mm/oom_kill.c``), defined once: the points of one task
and whether it may be chosen at all, under the rules of the kernel that scores it.

Both the live prediction (:mod:`memcgctl.logic.kernelheuristic`, today's kernel) and the
reports rebuilt from a saved log (:mod:`memcgctl.logic.oomscore`, every era since 2.6.36)
call :func:`oom_badness`; the eras differ only in :class:`KernelRules`.  Pure, no I/O.
"""

from __future__ import annotations

from memcgctl.vocab.constants import OOM_SCORE_ADJ_MIN
from memcgctl.vocab.structs import dataclass

Version = tuple[int, int]

ADJ30 = "adj30"  # before 3.14: root's oom_score_adj counts 30 lower
PCT3 = "pct3"  # 3.14-4.16: root's points are 3% lower


@dataclass(frozen=True)
class KernelRules:
    version: Version
    source: str  # "release" (from the report), "layout" (inferred from it), "current"
    root_bonus: str | None  # ADJ30 | PCT3 | None
    clamp_to_one: bool
    ties_to_last: bool
    normalised: bool = False  # before 3.8: points on the 0..1000 scale


# the kernel this machine runs, as the live prediction scores it (5.9+: no root bonus,
# no clamp, ties to the last scanned, points in pages)
CURRENT_RULES = KernelRules((5, 9), "current", None, False, True)


def rules_of_version(version: Version, source: str) -> KernelRules:
    """The scoring rules of a kernel release."""
    bonus = ADJ30 if version < (3, 14) else PCT3 if version < (4, 17) else None
    return KernelRules(
        version, source, bonus, version < (5, 9), version >= (5, 3), version < (3, 8)
    )


def may_be_chosen(pid: int, oom_score_adj: int) -> bool:
    """``oom_unkillable_task`` and ``OOM_SCORE_ADJ_MIN``: init and -1000 never die (a
    kernel thread or a task without an mm is the caller's to leave out)."""
    return pid != 1 and oom_score_adj != OOM_SCORE_ADJ_MIN


def oom_badness(
    base_pages: int, oom_score_adj: int, uid: int, totalpages: int, rules: KernelRules
) -> tuple[int, int]:
    """(points, the part of them that is not ``base_pages``) of an eligible task.

    ``base_pages``: rss + swap entries + page-table pages.  From 3.8 the points are
    pages: ``base + oom_score_adj * (totalpages / 1000)`` (integer division first);
    before 3.8 they were normalised: ``base * 1000 / totalpages + oom_score_adj``, 1 to
    1000.  The root bonus (uid 0 standing in for CAP_SYS_ADMIN) and the clamp to 1
    (before 5.9) come from ``rules``."""
    root = rules.root_bonus is not None and uid == 0
    if rules.normalised:
        scaled = base_pages * 1000 // max(totalpages, 1)
        points = scaled + oom_score_adj - (30 if root else 0)
        points = min(max(points, 1), 1000)
        return points, points - scaled
    points = base_pages
    adj = oom_score_adj
    if root and rules.root_bonus == ADJ30:
        adj -= 30
    elif root and rules.root_bonus == PCT3:
        points -= points * 3 // 100
    points += adj * (totalpages // 1000)
    if rules.clamp_to_one and points <= 0:
        points = 1
    return points, points - base_pages


def printed_score(points: int, totalpages: int, rules: KernelRules) -> int:
    """The score 3.x-4.18 print in ``Kill process N (comm) score S``: points × 1000 /
    totalpages (before 3.8 the points are that scale already)."""
    return points if rules.normalised else points * 1000 // max(totalpages, 1)
