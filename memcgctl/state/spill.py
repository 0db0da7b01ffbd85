"""Records sorted in bounded memory: a merge sort whose runs, past the first, wait in
anonymous temporary files (``events`` over a journal of 100,000 records: the journal
is not in time order, since kernel kills are journaled when a command first sees them,
with the kernel's older time, after later records).

Each run of at most ``run`` records is sorted in memory and written as JSON lines to
a ``tempfile.TemporaryFile`` (unlinked at once, ``0600``); the runs are merged with
:func:`heapq.merge`, which keeps their order on a tie, so the result is the stable
sort of the whole.  Fewer than ``run`` records never touch a file.  A file that cannot
be written (no space, no temporary directory) leaves the records in memory instead.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

RUN = 4096


def _written(records: list[Any], where: str | None) -> IO[bytes]:
    import tempfile

    f = tempfile.TemporaryFile(dir=where)  # noqa: SIM115, RUF100 (handed to _read, which closes it)
    try:
        for rec in records:
            f.write(json.dumps(rec, separators=(",", ":")).encode() + b"\n")
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return f


def _read(f: IO[bytes]) -> Iterator[Any]:
    with f:
        for line in f:
            yield json.loads(line)


def sorted_bounded(
    items: Iterable[Any], key: Callable[[Any], Any], run: int = RUN, where: str | None = None
) -> Iterator[Any]:
    """``sorted(items, key=key)`` (stable), holding at most ``run`` items and one item
    of each earlier run; items must survive a JSON round trip (journal records do).
    ``where``: the directory of the temporary files (default: tempfile's)."""
    runs: list[Iterable[Any]] = []
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= run:
            batch.sort(key=key)
            try:
                runs.append(_read(_written(batch, where)))
            except OSError:
                runs.append(batch)  # kept in memory: correct, only larger
            batch = []
    batch.sort(key=key)
    runs.append(batch)
    if len(runs) == 1:
        return iter(batch)
    return iter(heapq.merge(*runs, key=key))
