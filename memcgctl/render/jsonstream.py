"""One JSON document written piece by piece, in constant memory.

``--json`` prints one document (``json.dumps(doc, indent=2)``); when its arrays hold
100,000 events, building the document and its text at once cost hundreds of MB.  Here
the document is the same ``dict``, except that a value may be an *iterator* (a generator
of items: written one by one as an array, each item as soon as it is made) or a
:class:`Later` (a value computed when the writer reaches it, i.e. after every array
before it has been written).  The text is byte for byte ``json.dumps(doc, indent=2)`` of
the document with each iterator replaced by the list of its items and each ``Later``
by its value (``tests/test_jsonstream.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import click

STEP = "  "  # json.dumps(indent=2)


class Later:
    """A value computed when the writer comes to it (e.g. a count of the items of an
    array written before it)."""

    def __init__(self, compute: Callable[[], Any]) -> None:
        self.compute = compute


def _streamed(value: Any) -> bool:
    """Whether ``value`` holds an iterator or a Later (at any depth of dicts)."""
    if isinstance(value, (Iterator, Later)):
        return True
    return isinstance(value, dict) and any(_streamed(v) for v in value.values())


def chunks(value: Any, indent: str = "") -> Iterator[str]:
    """The text of ``value`` nested at ``indent`` (the indentation of its line), piece
    by piece; each item of an iterator is pulled only when the text before it has been
    yielded, so a consumer that writes every piece shows each item before the next is
    made (or read)."""
    if isinstance(value, Later):
        value = value.compute()
    if isinstance(value, dict) and value and _streamed(value):
        inner = indent + STEP
        sep = "{\n"
        for key, v in value.items():
            yield f"{sep}{inner}{json.dumps(str(key))}: "
            yield from chunks(v, inner)
            sep = ",\n"
        yield f"\n{indent}}}"
    elif isinstance(value, Iterator):
        inner = indent + STEP
        sep = "[\n"
        for item in value:
            if _streamed(item):
                yield sep + inner
                yield from chunks(item, inner)
            else:  # one piece per item
                yield sep + inner + _text(item, inner)
            sep = ",\n"
        yield "[]" if sep == "[\n" else f"\n{indent}]"
    else:
        yield _text(value, indent)


def _text(value: Any, indent: str) -> str:
    # a JSON string never holds a raw newline: every line break is the layout's
    return json.dumps(value, indent=2).replace("\n", "\n" + indent)


def emit_json_stream(doc: Any) -> None:
    """Write ``doc`` (see the module) to standard output, then a newline, as
    :func:`memcgctl.render.output.emit_json` would.  Each piece is written (and
    flushed) before the next is asked for, so an item is out before the next one is
    read: the cost of ``--json-lines``, one write per item."""
    for piece in chunks(doc):
        click.echo(piece, nl=False)
    click.echo()
