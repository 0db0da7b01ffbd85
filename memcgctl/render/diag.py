"""memcgctl's own lines on stderr: ``memcgctl: MESSAGE`` and ``memcgctl: warning: MESSAGE``.

The one place that writes the prefix (errors, warnings, progress notes).  Standard
library only, like :mod:`memcgctl.render.safetext`: readers and the daemon's kill path use it.
"""

from __future__ import annotations

import sys
from contextlib import suppress

from memcgctl.render.safetext import printable

PREFIX = "memcgctl: "


def diagnostic(message: object) -> None:
    """One line on stderr, unprintable characters replaced (``ps`` style).  Never an
    exception: a kill must not wait on, or die of, a closed stderr."""
    with suppress(OSError, ValueError):
        sys.stderr.write(printable(f"{PREFIX}{message}") + "\n")
        sys.stderr.flush()


def warning(message: object) -> None:
    """``memcgctl: warning: MESSAGE`` on stderr."""
    diagnostic(f"warning: {message}")
