"""The badness scale: 0-1000, lower dies first, 500 unset, 1000 never.  In a module of
its own so that one-shot commands get the numbers without creating the snapshot's
dataclasses (they must start fast)."""

BADNESS_MIN = 0
BADNESS_DEFAULT = 500
BADNESS_NEVER = 1000
