"""Signal names: ``SIGKILL`` written as the operator types it and as the output shows
it.  :func:`parse_signal` takes ``KILL``, ``SIGKILL``, ``kill`` or a number;
:func:`signal_name` gives the ``SIG…`` name back (or the number for one Python does not
know)."""

from __future__ import annotations

import signal

from memcgctl.vocab.errors import UsageProblem


def signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def parse_signal(text: str) -> int:
    """``KILL``, ``SIGKILL``, ``kill`` or ``9`` → 9."""
    t = text.strip().upper()
    if t.isascii() and t.isdigit():
        sig = int(t)
        try:
            signal.Signals(sig)
        except ValueError:
            raise UsageProblem(f"{text}: not a signal number") from None
        return sig
    name = t if t.startswith("SIG") else "SIG" + t
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise UsageProblem(f"{text}: unknown signal") from None
