"""Output: JSON documents, and tables drawn by rich on a terminal or tabulate when piped.

rich and tabulate are imported only inside the functions that draw, so commands that
print JSON or one line never pay for them.

Every cell, label and line drawn here may hold text another user controls (process
names, cgroup names): it goes through :func:`memcgctl.safetext.printable`, and rich gets
``Text`` objects, never markup, so ``[/evil]`` is printed as it is (SPEC §10).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import click

from memcgctl.safetext import printable

F = TypeVar("F", bound=Callable[..., Any])


class Output(NamedTuple):
    json: bool = False
    plain: bool = False

    @property
    def rich(self) -> bool:
        return not self.json and not self.plain and sys.stdout.isatty()


def output_options(func: F) -> F:
    """Add ``--json`` and ``--plain``; the command receives ``out: Output``."""

    @click.option("--plain", is_flag=True, help="Plain-text table even on a terminal.")
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, plain: bool, **kwargs: Any) -> Any:
        return func(*args, out=Output(json=as_json, plain=plain), **kwargs)

    return wrapper  # type: ignore[return-value]


def emit_json(doc: Any) -> None:
    import json  # lazily: one-shot commands without --json skip it (SPEC §8)

    click.echo(json.dumps(doc, indent=2))


def emit_json_line(doc: Any) -> None:
    import json

    click.echo(json.dumps(doc, separators=(",", ":")))


def say(line: object = "", err: bool = False) -> None:
    """One line of human output, unprintable characters replaced (``ps`` style)."""
    click.echo(printable(line), err=err)


def print_table(
    out: Output,
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    title: str | None = None,
    right_align: Sequence[int] = (),
) -> None:
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
                Text(printable(h)), justify="right" if i in right_align else "left", no_wrap=i == 0
            )
        for row in rows:
            table.add_row(*(Text(printable(c)) for c in row))
        Console().print(table)
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
    try:  # (through kwargs: the stubs for tabulate 0.9 lack the keyword)
        text = tabulate_module.tabulate(cells, **{**kwargs, "preserve_whitespace": True})
    except TypeError:
        text = tabulate_module.tabulate(cells, **kwargs)
    click.echo(text)


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

        def build(node: TreeNode, parent: Tree | None) -> Tree:
            label = Text(printable(node.label), style=node.style)
            tree = Tree(label) if parent is None else parent.add(label)
            for child in node.children:
                build(child, tree)
            return tree

        Console().print(build(root, None))
        return
    lines = [printable(root.label)]

    def walk(node: TreeNode, guides: str) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            lines.append(guides + ("└─ " if last else "├─ ") + printable(child.label))
            walk(child, guides + ("   " if last else "│  "))

    walk(root, "")
    click.echo("\n".join(lines))
