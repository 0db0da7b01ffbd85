"""Parsing and formatting of durations, sizes and badness values."""

from __future__ import annotations

import re

from memcgctl.constants import BADNESS_MIN, BADNESS_NEVER
from memcgctl.errors import UsageProblem

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_FACTOR_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
# A delay longer than a day is certainly a typo; the daemon would hang a memcg that long.
MAX_DELAY_MS = 86_400_000


def parse_duration_ms(text: str) -> int:
    """``500ms``, ``2s``, ``1.5s``, ``1m``, ``0`` → milliseconds.  A bare number other
    than 0 needs a unit (``500`` could mean ms or s)."""
    m = _DURATION.match(text)
    if not m:
        raise UsageProblem(f"{text!r}: not a duration (use e.g. 500ms, 2s, 1m, 0 or off)")
    number, unit = m.group(1), m.group(2)
    if unit is None:
        if float(number) != 0:
            raise UsageProblem(f"{text!r}: give a unit (ms, s, m or h)")
        return 0
    value = round(float(number) * _FACTOR_MS[unit])
    if value > MAX_DELAY_MS:
        raise UsageProblem(f"{text!r}: longer than 24h")
    return value


def parse_delay(text: str) -> int | None:
    """A delay argument: a duration, or ``off`` (None) to clear it."""
    if text.strip().lower() == "off":
        return None
    return parse_duration_ms(text)


def format_duration_ms(ms: int | None) -> str:
    if ms is None:
        return "off"
    if ms == 0:
        return "0"
    if ms % 60_000 == 0:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def parse_badness(text: str) -> int | None:
    """0–1000, or ``default`` (None) to clear."""
    t = text.strip().lower()
    if t == "default":
        return None
    if not re.fullmatch(r"\d+", t):
        raise UsageProblem(f"{text!r}: badness must be an integer 0-1000 or 'default'")
    value = int(t)
    if not BADNESS_MIN <= value <= BADNESS_NEVER:
        raise UsageProblem(f"{text!r}: badness must be between 0 and 1000")
    return value


def format_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        # 1023.96M would print as "1024.0M": promote it to "1.0G"
        if value < (1024 if unit == "B" else 1023.95) or unit == "T":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{n}B"  # pragma: no cover


def format_kb(kb: int) -> str:
    return format_bytes(kb * 1024)
