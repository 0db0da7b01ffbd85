"""The ``memcgctl`` command group: global options and wiring only.

Commands live in :mod:`memcgctl.commands`; each module registers its own.  Errors are
our exception types (:mod:`memcgctl.vocab.errors`, no click there): this module alone turns
them, click's own errors and a stray OSError into one stderr line and an exit code.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys
from pathlib import Path
from typing import Any

import click

from memcgctl import __version__
from memcgctl.render.diag import diagnostic
from memcgctl.vocab.errors import MemcgctlError, from_oserror


class MemcgctlGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = LAZY_COMMANDS.get(cmd_name)
        if target is not None and cmd_name not in self.commands:
            module_name, _, attr = target.partition(":")
            command = getattr(importlib.import_module(module_name), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """click's, plus "did you mean" for a mistyped command (as click does for options)."""
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            name = args[0] if args else ""
            if name.startswith("-") or self.get_command(ctx, name) is not None:
                raise
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=3, cutoff=0.6)
            close += [c for c in self.list_commands(ctx) if c.startswith(name) and c not in close]
            if not close:
                raise
            hint = " or ".join(repr(c) for c in close[:3])
            raise click.UsageError(f"No such command {name!r}. Did you mean {hint}?", ctx) from exc

    def main(
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Like click's standalone mode, but every error is one line on stderr: ours
        (:class:`MemcgctlError`, its status as exit code) and click's usage errors
        too (exit 2), without the usage banner."""
        if os.environ.get(complete_var or "_MEMCGCTL_COMPLETE"):
            from memcgctl.commands.completion import install

            install()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            sub = exc.ctx.command_path.partition(" ")[2] if exc.ctx is not None else ""
            where = f"{sub}: " if sub else ""
            message = exc.format_message().rstrip(".")
            diagnostic(f"{where}{message} (see --help)")
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except MemcgctlError as exc:
            diagnostic(exc.message)
            sys.exit(int(exc.status))
        except click.Abort:
            diagnostic("aborted")
            sys.exit(1)
        except KeyboardInterrupt:
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MemcgctlError:
            raise
        except BrokenPipeError:
            # `memcgctl ps | head`: the reader went away; not our failure
            sys.stderr.close()
            raise click.exceptions.Exit(0) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise click.exceptions.Exit(0) from None
            raise from_oserror(exc) from exc


@click.group(cls=MemcgctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--cgroup-root",
    envvar="MEMCGCTL_CGROUP_ROOT",
    type=click.Path(path_type=Path, file_okay=False),
    help="Memory cgroup mount (default: from /proc/self/mountinfo). [env: MEMCGCTL_CGROUP_ROOT]",
)
@click.option(
    "--proc-root",
    envvar="MEMCGCTL_PROC_ROOT",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/proc"),
    show_default=True,
    help="Where proc is mounted. [env: MEMCGCTL_PROC_ROOT]",
)
@click.option(
    "--kmsg",
    envvar="MEMCGCTL_KMSG",
    default="/dev/kmsg",
    show_default=True,
    help="Kernel log source. [env: MEMCGCTL_KMSG]",
)
@click.option(
    "--state-dir",
    envvar="MEMCGCTL_STATE_DIR",
    # not readable=True: another user reads a root-owned 0700 one as "nothing there"
    type=click.Path(path_type=Path, file_okay=False, readable=False),
    default=Path("/run/memcgctl"),
    show_default=True,
    help="Process-badness registry and journal. [env: MEMCGCTL_STATE_DIR]",
)
@click.option(
    "--rules",
    "rules_dir",
    envvar="MEMCGCTL_RULES_DIR",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/etc/memcgctl/rules.d"),
    show_default=True,
    help="Badness rules directory (*.toml, root's). [env: MEMCGCTL_RULES_DIR]",
)
@click.version_option(__version__, prog_name="memcgctl")
@click.pass_context
def cli(
    ctx: click.Context,
    cgroup_root: Path | None,
    proc_root: Path,
    kmsg: str,
    state_dir: Path,
    rules_dir: Path,
) -> None:
    """Strict-priority OOM handling for Linux memory cgroups.

    Lower badness means "kill me first"; 1000 means never.  Inspect the memcg tree,
    predict the OOM victim, set priorities and delays, kill whole cgroups, watch OOM
    events and counters.
    """
    from memcgctl.env import Env  # not for --help/--version: they must start fast

    ctx.obj = Env(
        cgroup_root=cgroup_root,
        proc_root=proc_root,
        kmsg=kmsg,
        state_dir=state_dir,
        rules_dir=rules_dir,
        program=ctx.obj is PROGRAM,
    )


PROGRAM = object()  # main()'s ctx.obj until the group builds the Env: run as the program


# Commands are imported only when used (or listed by --help), so a one-shot command
# pays for its own module alone (a one-shot command may cost at most 1.25x
# `python -c "import click"`: bench/startup_bench.py).
LAZY_COMMANDS: dict[str, str] = {
    "tree": "memcgctl.commands.inspect:tree",
    "ps": "memcgctl.commands.inspect:ps",
    "set-badness": "memcgctl.commands.badness:set_badness",
    "get-badness": "memcgctl.commands.badness:get_badness",
    "set-delay": "memcgctl.commands.badness:set_delay",
    "get-delay": "memcgctl.commands.badness:get_delay",
    "kill-all": "memcgctl.commands.killall:kill_all",
    "predict-victim": "memcgctl.commands.predict:predict_victim",
    "daemon": "memcgctl.commands.daemon:daemon",
    "events": "memcgctl.commands.events:events",
    "counters": "memcgctl.commands.counters:counters",
    "run": "memcgctl.commands.run:run",
    "explain-kill": "memcgctl.commands.postmortem:explain_kill",
    "kube": "memcgctl.commands.kube:kube",
    "set-limit": "memcgctl.commands.setlimit:set_limit",
    "status": "memcgctl.commands.status:status",
    "top": "memcgctl.commands.top:top",
    "apply": "memcgctl.commands.apply:apply",
    "install-unit": "memcgctl.commands.installunit:install_unit",
}


def main(argv: list[str] | None = None) -> int:
    import gc

    # What is loaded by now (the interpreter, click, this module) lives as long as the
    # process: out of the collector's sight, the collections while a command's modules
    # load, and the one at exit, skip it (a one-shot command starts ~10 % faster;
    # bench/startup_bench.py).  The collector still runs for everything made after.
    gc.freeze()
    try:
        cli.main(args=argv, prog_name="memcgctl", standalone_mode=True, obj=PROGRAM)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0
