"""The badness scale: 0-1000, lower dies first, 500 unset, 1000 never.  In a module of
its own so that one-shot commands get the numbers without creating the snapshot's
dataclasses (they must start fast)."""

BADNESS_MIN = 0
BADNESS_DEFAULT = 500
BADNESS_NEVER = 1000

# ``OOM_SCORE_ADJ_MIN`` of include/uapi/linux/oom.h: the kernel never chooses such a task
OOM_SCORE_ADJ_MIN = -1000


def fallback_badness(oom_score_adj: int) -> tuple[int, str]:
    """(badness, source) of a process without a badness of its own: a process the
    kernel never kills (oom_score_adj -1000) is never killed by us either, anything
    else has the default."""
    if oom_score_adj == OOM_SCORE_ADJ_MIN:
        return BADNESS_NEVER, "oom_score_adj"
    return BADNESS_DEFAULT, "default"
