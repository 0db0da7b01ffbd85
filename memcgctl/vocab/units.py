"""Parsing and formatting of durations, sizes and badness values."""

from __future__ import annotations

import re

from memcgctl.vocab.constants import BADNESS_MIN, BADNESS_NEVER
from memcgctl.vocab.errors import UsageProblem

# ASCII digits only: Python's \d and int() also take "５" or "١", which no operator means
# patterns, compiled (and cached by re) on first use: most commands parse none of them
_DURATION = r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$"
_SECONDS = r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*$"
_FACTOR_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
# A delay longer than a day is certainly a typo; the daemon would hang a memcg that long.
MAX_DELAY_MS = 86_400_000


DELAY_EXAMPLES = "500ms, 2s, 1m, 0 or off"


def parse_duration_ms(text: str, examples: str = DELAY_EXAMPLES) -> int:
    """``500ms``, ``2s``, ``1.5s``, ``1m``, ``0`` → milliseconds.  A bare number other
    than 0 needs a unit (``500`` could mean ms or s).  ``examples`` is the hint shown
    for a word that is no duration (``off`` is one only where it means something)."""
    m = re.match(_DURATION, text, re.ASCII)
    if not m:
        raise UsageProblem(f"{text!r}: not a duration (use e.g. {examples})")
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


def parse_seconds(text: str, what: str = "seconds", maximum: float = MAX_DELAY_MS / 1000) -> float:
    """A number of seconds for a timeout: ASCII digits with an optional fraction, finite,
    not negative, at most ``maximum`` (``nan``, ``inf``, ``-1``, ``1e3``, ``٣`` are refused)."""
    m = re.match(_SECONDS, text, re.ASCII)
    if not m:
        raise UsageProblem(f"{text!r}: not a number of seconds (use e.g. 5 or 0.5)")
    value = float(m.group(1))
    if value > maximum:
        raise UsageProblem(f"{text!r}: {what} longer than {maximum:g}s")
    return value


def parse_int_ascii(text: str, what: str) -> int:
    """A non-negative decimal integer written in ASCII digits."""
    t = text.strip()
    if not re.fullmatch(r"[0-9]{1,18}", t, re.ASCII):
        raise UsageProblem(f"{text!r}: {what} must be a whole number (digits 0-9)")
    return int(t)


def format_duration_ms(ms: int | None) -> str:
    if ms is None:
        return "off"
    if ms == 0:
        return "0"
    if ms % 3_600_000 == 0:
        return f"{ms // 3_600_000}h"
    if ms % 60_000 == 0:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


_SIZE = r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*$"
_SIZE_FACTOR = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str, what: str = "size") -> int:
    """``64M``, ``1.5G``, ``512KiB``, ``1048576`` (bytes) → bytes, as ``systemd-run -p
    MemoryMax=`` takes them (binary multiples)."""
    m = re.match(_SIZE, text, re.ASCII | re.I)
    if not m:
        raise UsageProblem(f"{text!r}: {what} is not a size (use e.g. 64M, 1.5G, 512K)")
    value = int(float(m.group(1)) * _SIZE_FACTOR[m.group(2).lower()])
    if value <= 0:
        raise UsageProblem(f"{text!r}: {what} must be more than 0")
    return value


def parse_badness(text: str) -> int | None:
    """0–1000, or ``default`` (None) to clear."""
    t = text.strip().lower()
    if t == "default":
        return None
    if not re.fullmatch(r"[0-9]+", t, re.ASCII):
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
