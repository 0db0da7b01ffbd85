"""Output: JSON documents, and tables drawn by rich on a terminal or tabulate when piped.

rich and tabulate are imported only inside the functions that draw, so commands that
print JSON or one line never pay for them.

Every cell, label and line drawn here may hold text another user controls (process
names, cgroup names): it goes through :func:`memcgctl.render.safetext.printable`, and rich gets
``Text`` objects, never markup, so ``[/evil]`` is printed as it is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import click

from memcgctl.render.safetext import printable

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
N = TypeVar("N")


class Output(NamedTuple):
    json: bool = False
    plain: bool = False
    wide: bool = False

    @property
    def rich(self) -> bool:
        return not self.json and not self.plain and sys.stdout.isatty()


def emit_json(doc: Any) -> None:
    import json  # lazily: one-shot commands without --json skip it (start-up time)

    click.echo(json.dumps(doc, indent=2))


def emit_json_line(doc: Any) -> None:
    import json

    click.echo(json.dumps(doc, separators=(",", ":")))


def say(line: object = "", err: bool = False) -> None:
    """One line of human output, unprintable characters replaced (``ps`` style)."""
    click.echo(printable(line), err=err)


class Column(NamedTuple):
    """One column of a table that fits the terminal (:func:`print_columns`).

    ``priority`` 0 is never dropped (names and numbers); higher values go first when the
    terminal is narrow.  ``short``/``short_cells`` are the abbreviated header and cells
    used before anything is dropped."""

    header: str
    cells: Sequence[str]
    right: bool = False
    priority: int = 0
    short: str | None = None
    short_cells: Sequence[str] | None = None
    elide: int = 0  # > 0: cells may be shortened (middle "…") down to this width

    def width(self, abbreviated: bool) -> int:
        header = (self.short or self.header) if abbreviated else self.header
        cells = self.short_cells if abbreviated and self.short_cells is not None else self.cells
        return max([len(printable(header))] + [len(printable(c)) for c in cells])

    def abbreviated(self) -> Column:
        return self._replace(
            header=self.short or self.header,
            cells=self.short_cells if self.short_cells is not None else self.cells,
        )


COLUMN_GAP = 2  # spaces between columns, as both renderers draw them


class Field(Generic[T]):
    """One column of an object's field list (:mod:`memcgctl.render.views`): the header and how
    to draw one object's cell, plus the :class:`Column` hints for a narrow terminal.
    (A plain class, not a dataclass: every command imports this module, and dataclasses
    costs a one-shot command's start-up more than it saves here.)"""

    __slots__ = ("cell", "elide", "header", "priority", "right", "short", "short_cell")

    def __init__(
        self,
        header: str,
        cell: Callable[[T], str],
        right: bool = False,
        priority: int = 0,
        short: str | None = None,
        short_cell: Callable[[T], str] | None = None,
        elide: int = 0,
    ) -> None:
        self.header = header
        self.cell = cell
        self.right = right
        self.priority = priority
        self.short = short
        self.short_cell = short_cell
        self.elide = elide

    def __repr__(self) -> str:
        return f"Field({self.header!r})"

    def column(self, items: Sequence[T]) -> Column:
        return Column(
            self.header,
            [self.cell(i) for i in items],
            self.right,
            self.priority,
            self.short,
            None if self.short_cell is None else [self.short_cell(i) for i in items],
            self.elide,
        )


def columns_of(fields: Sequence[Field[T]], items: Sequence[T]) -> list[Column]:
    return [f.column(items) for f in fields]


def draw_table(
    out: Output,
    fields: Sequence[Field[T]],
    items: Sequence[T],
    title: str | None = None,
    fit: bool = True,
) -> None:
    """The one way a list of objects becomes a table: one row per item, one column per
    field.  ``fit``: fitted to the terminal (:func:`print_columns`); else every column
    at its width (:func:`print_table`)."""
    cols = columns_of(fields, items)
    if fit:
        print_columns(out, cols, title=title)
        return
    rows = [[c.cells[i] for c in cols] for i in range(len(items))]
    right = [i for i, c in enumerate(cols) if c.right]
    print_table(out, [c.header for c in cols], rows, title=title, right_align=right)


def print_aligned(fields: Sequence[Field[T]], items: Sequence[T]) -> None:
    """Aligned columns without a table library, for one-shot commands that must start
    fast: the header line, then one line per item."""
    cols = columns_of(fields, items)
    rows = [[c.header for c in cols]] + [[c.cells[i] for c in cols] for i in range(len(items))]
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    for r in rows:
        cells = (
            c.rjust(w) if col.right else c.ljust(w)
            for c, w, col in zip(r, widths, cols, strict=True)
        )
        say("  ".join(cells).rstrip())


def table_width(columns: Sequence[Column], abbreviated: bool = False) -> int:
    return sum(c.width(abbreviated) for c in columns) + COLUMN_GAP * max(len(columns) - 1, 0)


def fit_columns(columns: Sequence[Column], width: int | None) -> list[Column]:
    """The columns to draw in ``width`` characters (None: all of them), the way ``ps``
    and ``systemd-cgls`` fit a terminal: numbers are never truncated; first the
    abbreviated headers and cells, then the lowest-value columns (highest ``priority``)
    are dropped; before the most useful ones go (:data:`ELIDE_BEFORE`), a long name is
    shortened in the middle ("…").  Columns of priority 0 always stay, even if the line
    then overflows."""
    cols = list(columns)
    if width is None or table_width(cols) <= width:
        return cols
    cols = [c.abbreviated() for c in cols]
    for priority in sorted({c.priority for c in cols if c.priority > 0}, reverse=True):
        if table_width(cols) <= width:
            break
        if priority == ELIDE_BEFORE:
            cols = _elided(cols, width)
            if table_width(cols) <= width:
                break
        # drop this priority's columns one at a time, rightmost first
        for victim in [c for c in reversed(cols) if c.priority == priority]:
            if table_width(cols) <= width:
                break
            cols.remove(victim)
    return cols


# before the columns of this priority go (BADNESS, TASKS), a long name is shortened
ELIDE_BEFORE = 1
ELLIPSIS = "…"


def ellipsize(text: str, width: int) -> str:
    """``text`` in ``width`` characters, its middle replaced by "…" (a tree's guides
    and a name's start stay, and so does its end, where names differ)."""
    if len(text) <= width or width < 3:
        return text
    head = (width - 1) // 2 + (width - 1) % 2
    return text[:head] + ELLIPSIS + text[len(text) - (width - 1 - head) :]


def _elided(cols: list[Column], width: int) -> list[Column]:
    """The elidable columns shortened (not below their ``elide`` width) by what the
    table is too wide."""
    over = table_width(cols) - width
    out = []
    for c in cols:
        current = c.width(False)
        if over <= 0 or c.elide <= 0 or current <= c.elide:
            out.append(c)
            continue
        target = max(c.elide, current - over)
        over -= current - target
        out.append(c._replace(cells=[ellipsize(printable(x), target) for x in c.cells]))
    return out


def terminal_width(out: Output) -> int | None:
    """Width to fit tables in: the terminal's, or None (everything) when piped or --wide."""
    if out.wide or out.json or not sys.stdout.isatty():
        return None
    import shutil

    return shutil.get_terminal_size().columns


def print_columns(out: Output, columns: Sequence[Column], title: str | None = None) -> None:
    """A table fitted to the terminal (see :func:`fit_columns`); never truncates a cell."""
    width = terminal_width(out)
    cols = fit_columns(columns, width)
    nrows = max((len(c.cells) for c in cols), default=0)
    rows = [[c.cells[i] for c in cols] for i in range(nrows)]
    print_table(
        out,
        [c.header for c in cols],
        rows,
        title=title,
        right_align=[i for i, c in enumerate(cols) if c.right],
        min_width=table_width(cols),
    )


def print_table(
    out: Output,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    title: str | None = None,
    right_align: Sequence[int] = (),
    min_width: int | None = None,
) -> None:
    """A table; with ``min_width`` (from :func:`print_columns`) rich draws it at least
    that wide and wraps nothing, so a line longer than the terminal overflows instead of
    truncating a cell."""
    if out.rich:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(
            title=Text(printable(title)) if title else None,
            box=None,
            header_style="bold",
            pad_edge=False,
        )
        for i, h in enumerate(headers):
            table.add_column(
                Text(printable(h)),
                justify="right" if i in right_align else "left",
                no_wrap=i == 0 or min_width is not None,
                overflow="fold" if min_width is not None else "ellipsis",
            )
        for row in rows:
            table.add_row(*(Text(printable(c)) for c in row))
        console = Console()
        if min_width is not None and min_width > console.width:
            console = Console(width=min_width)
        console.print(table)
        return
    import tabulate as tabulate_module

    if title:
        click.echo(printable(title))
    aligns = ["right" if i in right_align else "left" for i in range(len(headers))]
    cells = [[printable(c) for c in row] for row in rows]
    kwargs: dict[str, Any] = {
        "headers": [printable(h) for h in headers],
        "tablefmt": "plain",
        "colalign": aligns,
        "disable_numparse": True,
    }
    # keep the tree guides' leading blanks: a keyword since tabulate 0.10, a global before
    tabulate_module.PRESERVE_WHITESPACE = True
    # measuring every cell with wcwidth is most of tabulate's time on a big table: only
    # where a character is not one column wide (wide, combining, invisible) is it needed
    global _HAS_WCWIDTH
    if _HAS_WCWIDTH is None:
        _HAS_WCWIDTH = bool(getattr(tabulate_module, "WIDE_CHARS_MODE", False))
    chars = set("".join(kwargs["headers"])).union(*(set("".join(row)) for row in cells))
    narrow = all(_one_column(ch) for ch in chars)
    if narrow and cells:
        # every character one column wide: tabulate's "plain" layout, without the cost
        # of its type inference and measuring per cell (most of a 5,000-row table's time)
        click.echo(plain_table(kwargs["headers"], cells, aligns))
        return
    if _HAS_WCWIDTH:
        tabulate_module.WIDE_CHARS_MODE = not narrow
    try:  # (through kwargs: the stubs for tabulate 0.9 lack the keyword)
        text = tabulate_module.tabulate(cells, **{**kwargs, "preserve_whitespace": True})
    except TypeError:
        text = tabulate_module.tabulate(cells, **kwargs)
    click.echo(text)


_HAS_WCWIDTH: bool | None = None  # tabulate found wcwidth (its WIDE_CHARS_MODE at import)


def plain_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], aligns: Sequence[str]
) -> str:
    """What ``tabulate(rows, headers, tablefmt="plain", colalign=aligns,
    disable_numparse=True, preserve_whitespace=True)`` prints for a non-empty table
    whose characters are each one column wide (tests/test_scale_unit.py checks that it
    is the same text): each column as wide as its widest cell and at least its header
    plus 2, two spaces between columns, every line stripped at the right."""
    widths = [len(h) + 2 for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    right = [a == "right" for a in aligns]
    pads = list(zip(widths, right, strict=True))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, (w, r) in zip(cells, pads, strict=True)
        ).rstrip()

    return "\n".join([line(headers), *(line(row) for row in rows)])


def _one_column(ch: str) -> bool:
    """``ch`` takes exactly one terminal column (what tabulate assumes without wcwidth)."""
    if " " <= ch <= "~":
        return True
    import unicodedata

    return (
        unicodedata.east_asian_width(ch) not in ("W", "F")
        and not unicodedata.combining(ch)
        and unicodedata.category(ch) not in ("Mn", "Me", "Cf", "Cc")
    )


def with_guides(root: N, children: Callable[[N], Sequence[N]]) -> list[tuple[str, N]]:
    """(guide prefix, node) in pre-order: ``""`` for ``root``, then ``├─ ``/``└─ ``
    with ``│  `` for the levels above (as ``systemd-cgls`` draws them).  The one place
    tree guides are made, for :func:`print_tree` and tables of a tree."""
    rows: list[tuple[str, N]] = [("", root)]
    # iterative (a tree may be thousands of levels deep): (node, last?, guides above it)
    stack: list[tuple[N, bool, str]] = []

    def push(node: N, guides: str) -> None:
        kids = children(node)
        stack.extend(
            (kid, i == len(kids) - 1, guides) for i, kid in reversed(list(enumerate(kids)))
        )

    push(root, "")
    while stack:
        node, last, guides = stack.pop()
        rows.append((guides + ("└─ " if last else "├─ "), node))
        push(node, guides + ("   " if last else "│  "))
    return rows


class TreeNode(NamedTuple):
    """A line of an explanation tree: ``label`` (plain text), an optional ``style``
    for rich (e.g. "bold red"), and children."""

    label: str
    children: tuple[TreeNode, ...] = ()
    style: str = ""


def print_tree(out: Output, root: TreeNode) -> None:
    """A rich Tree on a terminal; indented plain text with guides when piped/--plain."""
    if out.rich:
        from rich.console import Console
        from rich.text import Text
        from rich.tree import Tree

        top = Tree(Text(printable(root.label), style=root.style))
        todo: list[tuple[TreeNode, Tree]] = [(root, top)]  # iterative: any depth
        while todo:
            node, tree = todo.pop()
            for child in node.children:
                todo.append((child, tree.add(Text(printable(child.label), style=child.style))))
        Console().print(top)
        return
    rows = with_guides(root, lambda node: node.children)
    click.echo("\n".join(guides + printable(node.label) for guides, node in rows))
