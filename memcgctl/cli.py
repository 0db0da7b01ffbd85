"""The ``memcgctl`` command group: global options and wiring only.

Commands live in :mod:`memcgctl.commands`; each module registers its own.  Errors are
our exception types (:mod:`memcgctl.errors`); a stray OSError is mapped in one place.
"""

from __future__ import annotations

import errno
import sys
from pathlib import Path
from typing import Any

import click

from memcgctl import __version__
from memcgctl.env import Env
from memcgctl.errors import MemcgctlError, from_oserror


class MemcgctlGroup(click.Group):
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
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/run/memcgctl"),
    show_default=True,
    help="Process-badness registry and journal. [env: MEMCGCTL_STATE_DIR]",
)
@click.version_option(__version__, prog_name="memcgctl")
@click.pass_context
def cli(
    ctx: click.Context, cgroup_root: Path | None, proc_root: Path, kmsg: str, state_dir: Path
) -> None:
    """Strict-priority OOM handling for Linux memory cgroups.

    Lower badness means "kill me first"; 1000 means never.  Inspect the memcg tree,
    predict the OOM victim, set priorities and delays, kill whole cgroups, watch OOM
    events and counters.
    """
    ctx.obj = Env(cgroup_root=cgroup_root, proc_root=proc_root, kmsg=kmsg, state_dir=state_dir)


def _register() -> None:
    from memcgctl.commands import badness, events, inspect

    for module in (inspect, badness, events):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="memcgctl", standalone_mode=True)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    return 0
