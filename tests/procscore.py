"""What ``/proc/PID/oom_score`` shows on 5.9+, computed with the package's own scoring.

Test-only: memcgctl never prints this number (it ranks by the kernel's points), but the
tests compare it with the kernel's ``/proc/PID/oom_score`` to check that the scoring
model (``kernelheuristic.score``, ``oom_eligible``, ``host_totalpages``) is the kernel's.
"""

from __future__ import annotations

from memcgctl.logic.kernelheuristic import host_totalpages, oom_eligible, score
from memcgctl.vocab.model import KernelParams, ProcessInfo


def _c_div(a: int, b: int) -> int:
    """C's truncating integer division."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def proc_score(points: int, totalpages: int) -> int:
    """``/proc/PID/oom_score`` for an eligible task's points: the points on the 0..2000
    scale of ``oom_score_adj`` + 1000, times 2/3 (fs/proc/base.c, 5.9+)."""
    return _c_div((1000 + _c_div(points * 1000, totalpages)) * 2, 3)


def proc_oom_score(p: ProcessInfo, params: KernelParams) -> int:
    """What ``/proc/PID/oom_score`` shows on 5.9+ (host totalpages, 0 if ineligible)."""
    if not oom_eligible(p):
        return 0
    total = host_totalpages(params)
    return proc_score(score(p, total, params).points, total)
