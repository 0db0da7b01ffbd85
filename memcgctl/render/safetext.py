"""Text that other users control, made safe to print: shown literally, control
characters and escape sequences replaced (as ``ps`` does), ``key=value`` values quoted.

Process names (``comm``, set by any process with ``prctl(PR_SET_NAME)``), cgroup names
(chosen by a delegated user) and kernel-log text reach our terminal output and our
logs.  Two rules, one helper each:

* :func:`printable` for human output: every character that is not printable (control
  characters, ESC of an escape sequence, DEL, C1 controls, bidi overrides, line
  separators) becomes ``?``, as procps ``ps`` does.  Rich markup is a separate matter:
  :mod:`memcgctl.render.output` hands rich ``Text`` objects, never markup strings.
* :func:`log_value` for ``key=value`` log lines: a value with a space,
  ``=``, a quote, a backslash or anything unprintable is double-quoted with escapes, so
  a cgroup named ``x delay_ms=0 mode=oom`` stays one field.

No imports beyond the standard library: the daemon's hot path uses this.
"""

from __future__ import annotations

REPLACEMENT = "?"


def printable(text: object) -> str:
    """``text`` with every unprintable character replaced by ``?``."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():  # the common case: one C-level scan
        return s
    return "".join(c if c.isprintable() else REPLACEMENT for c in s)


_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _needs_quotes(s: str) -> bool:
    return not s or not s.isprintable() or any(c in s for c in ' ="\\')


def log_value(value: object) -> str:
    """One value of a ``key=value`` line: bare when that is unambiguous, else quoted."""
    s = value if isinstance(value, str) else str(value)
    if not _needs_quotes(s):
        return s
    out = []
    for c in s:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif c.isprintable():
            out.append(c)
        else:
            code = ord(c)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return '"' + "".join(out) + '"'
