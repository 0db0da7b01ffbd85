#!/usr/bin/env python3
"""Write man/memcgctl.1 from the live click command tree and the hand-written sections
in tools/man_sections.roff.

The template's placeholders are filled from the commands: @VERSION@, @SYNOPSIS@ (one
line per command), @GLOBAL_OPTIONS@, @COMMANDS@ (a subsection per command with its
help and options) and @ENVIRONMENT@ (every option that reads an environment variable).
It reads the parameters themselves (names, metavar, type, default, help), never
click's help formatter, whose layout changes between click releases.  Re-run after
adding commands:

    python3 tools/gen_man.py               # writes man/memcgctl.1
    python3 tools/gen_man.py --out FILE    # elsewhere (the staleness test)

Why not click-man: it formats options with click's get_help_record (the layout that
changed in click 8.5), writes one page per subcommand with no EXIT STATUS, ENVIRONMENT,
FILES or EXAMPLES, stamps the build date into the page, and walks Group.commands, which
misses memcgctl's lazily loaded commands.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import click  # noqa: E402

from memcgctl import __version__  # noqa: E402
from memcgctl.cli import cli  # noqa: E402

TEMPLATE = ROOT / "tools" / "man_sections.roff"
PROG = "memcgctl"


def esc(text: str) -> str:
    """Escape running text for roff: backslashes, and dashes as minus signs (options
    must be copy-pasteable)."""
    return text.replace("\\", "\\e").replace("-", "\\-")


def line(text: str) -> str:
    """One input line: a leading '.' or ''' would be read as a request."""
    text = esc(text)
    return "\\&" + text if text[:1] in (".", "'") else text


def paragraphs(help_text: str) -> list[list[str]]:
    """Split click help into paragraphs; a paragraph after a ``\\b`` line keeps its
    line breaks (click's own convention), others are one flowing line."""
    out: list[list[str]] = []
    for block in inspect.cleandoc(help_text).split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            out.append(["\b", *lines[1:]])
        else:
            out.append([" ".join(s.strip() for s in lines)])
    return out


def help_roff(help_text: str | None) -> list[str]:
    out: list[str] = []
    for i, para in enumerate(paragraphs(help_text or "")):
        if i:
            out.append(".PP")
        if para[0] == "\b":
            out += [".nf", *(line(s) for s in para[1:]), ".fi"]
        else:
            out.append(line(para[0]))
    return out


# The page is built from the documented attributes of click's Option/Argument objects
# (opts, metavar, type, default, envvar, help), never from click's help formatter
# (get_help_record, collect_usage_pieces, make_metavar): their layout changes between
# click releases (8.5 added positional arguments to the help records), and the committed
# page must be the same under every click that pyproject.toml allows.


def _type_metavar(param: click.Parameter) -> str:
    ptype = param.type
    if isinstance(ptype, click.Choice):
        return "[" + "|".join(str(c) for c in ptype.choices) + "]"
    return ptype.name.upper()


def _range(param: click.Parameter) -> str | None:
    """``1<=x<=100``, ``x>=0``: the bounds of an IntRange/FloatRange."""
    ptype = param.type
    if not isinstance(ptype, click.IntRange | click.FloatRange):
        return None
    lo = None if ptype.min is None else f"{ptype.min}{'<' if ptype.min_open else '<='}"
    hi = None if ptype.max is None else f"{'<' if ptype.max_open else '<='}{ptype.max}"
    if lo and hi:
        text = f"{lo}x{hi}"
    elif lo:
        text = f"x{'>' if ptype.min_open else '>='}{ptype.min}"
    elif hi:
        text = f"x{hi}"
    else:
        return None
    return f"{text} clamped" if ptype.clamp else text


def option_record(option: click.Option) -> tuple[str, str] | None:
    """(names and metavar, help with [default: …; range] / [required]) of an option."""
    if option.hidden:
        return None

    def names(opts: list[str]) -> str:  # short options first, as --help shows them
        return ", ".join(sorted(opts, key=lambda o: len(o) - len(o.lstrip("-"))))

    spec = names(option.opts)
    if option.secondary_opts:
        spec += " / " + names(option.secondary_opts)
    if not option.is_flag and not option.count:
        metavar = option.metavar or _type_metavar(option)
        spec += f" {metavar}" + ("..." if option.nargs != 1 else "")
    extras: list[str] = []
    default = option.default
    if option.show_default and not callable(default) and default not in (None, (), []):
        if isinstance(option.show_default, str):
            extras.append(f"default: {option.show_default}")
        elif option.is_flag and option.secondary_opts:  # --freeze/--no-freeze: the name
            chosen = option.opts if default else option.secondary_opts
            extras.append(f"default: {chosen[0].lstrip('-')}")
        elif not (option.is_flag and default is False):
            extras.append(f"default: {default}")
    described = _range(option)
    if described is not None:
        extras.append(described)
    if option.required:
        extras.append("required")
    help_text = " ".join((option.help or "").split())
    if extras:
        help_text = f"{help_text} [{'; '.join(extras)}]".strip()
    return spec, help_text


def argument_usage(argument: click.Argument) -> str:
    """How an argument appears in a synopsis: ``CGROUP``, ``[CGROUP]...``."""
    if argument.metavar is not None:
        return argument.metavar
    var = (argument.name or "").upper()
    if not argument.required:
        var = f"[{var}]"
    return var + ("..." if argument.nargs != 1 else "")


def options_roff(command: click.Command, ctx: click.Context) -> list[str]:
    out: list[str] = []
    for param in command.get_params(ctx):
        record = option_record(param) if isinstance(param, click.Option) else None
        if record is None:  # arguments are in the synopsis, not in the option list
            continue
        names, help_text = record
        out += [".TP", f"\\fB{esc(names)}\\fR", line(help_text)]
    return out


def examples_roff(name: str) -> list[str]:
    """The examples of the command's --help (memcgctl/commands/examples.py), each
    command line below what it does (the page's indentation leaves no room beside)."""
    from memcgctl.commands.examples import EXAMPLES

    if name not in EXAMPLES:
        return []
    out = [".PP", "Examples:", ".PP", ".nf"]
    for i, (cmd, what) in enumerate(EXAMPLES[name]):
        out += ([""] if i else []) + [line(f"# {what}"), line(cmd)]
    return [*out, ".fi"]


def commands(ctx: click.Context) -> list[tuple[str, click.Command]]:
    group = ctx.command
    assert isinstance(group, click.Group)
    found = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is not None and not command.hidden:
            found.append((name, command))
    return found


def usage(name: str, command: click.Command) -> str:
    pieces = " ".join(
        ["[OPTIONS]"] + [argument_usage(p) for p in command.params if isinstance(p, click.Argument)]
    )
    return f"\\fB{PROG} {esc(name)}\\fR {esc(pieces)}"


def render() -> str:
    ctx = click.Context(cli, info_name=PROG, **cli.context_settings)
    synopsis: list[str] = []
    sections: list[str] = []
    for name, command in commands(ctx):
        sub = click.Context(command, info_name=name, parent=ctx, **command.context_settings)
        synopsis += [usage(name, command), ".br"]
        sections += [f'.SS "{PROG} {esc(name)}"', usage(name, command), ".PP"]
        sections += help_roff(command.help)
        sections += examples_roff(name)
        sections += options_roff(command, sub)
    environment: list[str] = []
    for param in cli.get_params(ctx):
        if isinstance(param, click.Option) and isinstance(param.envvar, str):
            flag = max(param.opts, key=len)
            environment += [
                ".TP",
                f"\\fB{esc(param.envvar)}\\fR",
                f"Same as \\fB{esc(flag)}\\fR.",
            ]
    filled = (
        TEMPLATE.read_text()
        .replace("@VERSION@", __version__)
        .replace("@SYNOPSIS@\n", "\n".join(synopsis[:-1]) + "\n")
        .replace("@GLOBAL_OPTIONS@\n", "\n".join(options_roff(cli, ctx)) + "\n")
        .replace("@COMMANDS@\n", "\n".join(sections) + "\n")
        .replace("@ENVIRONMENT@\n", "\n".join(environment) + "\n")
    )
    header = '.\\" Generated by tools/gen_man.py from the click commands and tools/man_sections.roff: do not edit.\n'
    return header + filled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "man" / "memcgctl.1")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render())
    print(args.out)


if __name__ == "__main__":
    main()
