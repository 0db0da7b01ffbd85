"""A saved kernel log (a file or standard input), read in chunks: never slurped, so a
100 MB ``kern.log`` costs the same memory as a small one."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from memcgctl.vocab.errors import UsageProblem, from_oserror

if TYPE_CHECKING:
    from memcgctl.logic.logtext import LogLine

CHUNK = 1 << 20


def open_log(path: str) -> int:
    """An fd for the file ``path``.  A directory, a device or a missing
    file is a usage error naming the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UsageProblem(f"{path}: no such file") from None
    except OSError as exc:
        raise from_oserror(exc, path) from exc
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise from_oserror(exc, path) from exc
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
        os.close(fd)
        raise UsageProblem(f"{path}: not a regular file or pipe (a saved kernel log)")
    return fd


def read_chunks(path: str) -> Iterator[bytes]:
    """The bytes of a saved log, chunk by chunk; a read error names the file."""
    if path == "-":
        # read1: what the pipe holds now, not a full chunk (a stream is not held back)
        read: Callable[[int], bytes] = getattr(sys.stdin.buffer, "read1", sys.stdin.buffer.read)
        while True:
            try:
                chunk = read(CHUNK)
            except OSError as exc:
                raise from_oserror(exc, "standard input") from exc
            if not chunk:
                return
            yield chunk
    fd = open_log(path)
    try:
        while True:
            try:
                chunk = os.read(fd, CHUNK)
            except OSError as exc:
                raise from_oserror(exc, path) from exc
            if not chunk:
                return
            yield chunk
    finally:
        os.close(fd)


def read_log_lines(path: str) -> Iterator[LogLine]:
    """The kernel messages of the saved log ``path`` (``-``: standard input).  A line
    longer than the bound is cut with one warning on stderr, naming the first such
    line; further ones are cut silently."""
    from memcgctl.logic.logtext import MAX_LINE, read_lines
    from memcgctl.render.diag import warning

    warned = False

    def on_cut(lineno: int) -> None:
        nonlocal warned
        if not warned:
            warned = True
            where = "standard input" if path == "-" else path
            warning(
                f"{where}: line {lineno} is longer than {MAX_LINE >> 10} KiB: cut there"
                " (and any other line that long)"
            )

    return read_lines(read_chunks(path), on_cut=on_cut)
