"""The badness scale (SPEC §2), in a module of its own so that one-shot commands get
the numbers without creating the snapshot's dataclasses (SPEC §8 start-up budget)."""

BADNESS_MIN = 0
BADNESS_DEFAULT = 500
BADNESS_NEVER = 1000
