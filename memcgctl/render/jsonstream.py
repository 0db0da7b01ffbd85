"""One JSON document written piece by piece, in constant memory.

``--json`` prints one document (``json.dumps(doc, indent=2)``); when its arrays hold
100,000 events, building the document and its text at once cost hundreds of MB.  Here
the document is the same ``dict``, except that a value may be an *iterator* (a generator
of items: written one by one as an array, each item as soon as it is made) or a
:class:`Later` (a value computed when the writer reaches it, i.e. after every array
before it has been written).  The text is byte for byte ``json.dumps(doc, indent=2)`` of
the document with each iterator replaced by the list of its items and each ``Later``
by its value (``tests/test_json_stream.py``): it is json's own encoder, which with an
indent encodes lazily, piece by piece; an iterator is handed to it as a list whose
items are pulled one at a time.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from typing import Any, TextIO

BUFFER = 1 << 16  # characters gathered before a write, between two items


class Later:
    """A value computed when the writer comes to it (e.g. a count of the items of an
    array written before it)."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        self.compute = compute


class _Items(list):  # type: ignore[type-arg]
    """An iterator seen as a list by json's encoder: ``not items`` (an empty array is
    ``[]``) is known by pulling the first item; the others are pulled while the encoder
    iterates, each after ``before_pull`` (which writes out what is encoded so far)."""

    def __init__(self, items: Iterator[Any], before_pull: Callable[[], None]) -> None:
        super().__init__()
        self.items = items
        self.before_pull = before_pull
        before_pull()
        self.head: list[Any] = []  # the first item, if any
        for item in items:
            self.head.append(item)
            break
        self.empty = not self.head

    def __bool__(self) -> bool:
        return not self.empty

    def __iter__(self) -> Iterator[Any]:
        if self.empty:
            return
        yield self.head.pop()
        while True:
            self.before_pull()
            try:
                item = next(self.items)
            except StopIteration:
                return
            yield item


def _nothing() -> None:
    pass


def write_json_stream(
    doc: Any, write: Callable[[str], None], flush: Callable[[], None] | None = None
) -> None:
    """Write ``doc`` (see the module) and a newline, in pieces of about :data:`BUFFER`
    characters; with ``flush``, everything encoded is written and ``flush`` called
    before each item of an iterator is pulled, so each item is out before the next is
    made (or read)."""
    pending: list[str] = []
    size = 0

    def out() -> None:
        nonlocal size
        if pending:
            write("".join(pending))
            pending.clear()
            size = 0
        if flush is not None:
            flush()

    before_pull = out if flush is not None else _nothing

    def default(value: Any) -> Any:
        if isinstance(value, Later):
            return value.compute()
        if isinstance(value, Iterator):
            return _Items(value, before_pull)
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    for piece in json.JSONEncoder(indent=2, default=default).iterencode(doc):
        pending.append(piece)
        size += len(piece)
        if size >= BUFFER:
            write("".join(pending))
            pending.clear()
            size = 0
    pending.append("\n")
    out()


def emit_json_stream(doc: Any, live: bool = False) -> None:
    """Write ``doc`` to standard output as :func:`memcgctl.render.output.emit_json`
    would, in pieces of :data:`BUFFER` characters; ``live``: the items are read from an
    input as they come (a pipe), so each is also written out before the next is pulled
    (the cost of ``--json-lines``: one write per item)."""
    stream: TextIO = sys.stdout

    def write(text: str) -> None:
        stream.write(text)  # ASCII (json's escapes): nothing for click.echo to strip

    write_json_stream(doc, write, stream.flush if live else None)
    stream.flush()
