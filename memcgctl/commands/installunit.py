"""``memcgctl install-unit``: write the daemon's systemd unit for this memcgctl."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from memcgctl import __version__
from memcgctl.commands.common import dry_run_option, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import PROC, STATE_DIR, Env
from memcgctl.render.unitfile import UNIT_NAME, daemon_unit, memcgctl_command
from memcgctl.vocab.errors import PermissionDenied, UsageProblem


def _global_options(env: Env) -> list[str]:
    """The global options this invocation changed, for the unit's command lines."""
    opts: list[str] = []
    if env.cgroup_root is not None:
        opts += ["--cgroup-root", str(env.cgroup_root)]
    if env.proc_root != PROC:
        opts += ["--proc-root", str(env.proc_root)]
    if env.kmsg != "/dev/kmsg":
        opts += ["--kmsg", env.kmsg]
    if env.state_dir != STATE_DIR:
        opts += ["--state-dir", str(env.state_dir)]
    return opts


def _pythonpath() -> str | None:
    """Where this memcgctl was imported from, when that is not an installation's
    ``site-packages`` (a checkout run as ``python3 -m memcgctl`` from its directory or
    with ``PYTHONPATH=DIR``; an editable install): the unit finds the same code there."""
    pkg_parent = Path(__file__).resolve().parent.parent.parent
    if pkg_parent.name in ("site-packages", "dist-packages"):
        return None
    return str(pkg_parent)


@click.command(
    "install-unit",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
    epilog=epilog("install-unit"),
)
@click.option(
    "--unit-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/etc/systemd/system"),
    show_default=True,
    help="Where to write the unit.",
)
@click.option(
    "--name",
    default=UNIT_NAME,
    show_default=True,
    help="The unit's file name (ends in .service).",
)
@click.option(
    "--no-reload",
    is_flag=True,
    help="Do not run `systemctl daemon-reload` (an image being built, a chroot).",
)
@dry_run_option
@click.argument("daemon_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- DAEMON_ARGS...]")
@pass_env
def install_unit(
    env: Env,
    unit_dir: Path,
    name: str,
    no_reload: bool,
    dry_run: bool,
    daemon_args: tuple[str, ...],
) -> None:
    """Install the daemon's systemd unit for this memcgctl (as root).

    Writes UNIT_DIR/memcgctl-daemon.service running this memcgctl by its absolute path
    (a pip, pipx or venv install alike), with DAEMON_ARGS (e.g. -- --root /batch)
    after `daemon`, ExecStopPost= releasing a dead daemon's knobs, Type=notify with a
    watchdog; then runs `systemctl daemon-reload` and says how to enable it.
    --dry-run prints the unit and changes nothing.
    """
    from memcgctl.actions.unitinstall import daemon_reload, write_unit

    if not name.endswith(".service") or "/" in name or name.startswith("."):
        raise UsageProblem(f"--name {name!r}: a unit file name such as {UNIT_NAME}")
    if any(a in ("--release", "--dry-run", "-n", "--guard") for a in daemon_args):
        raise UsageProblem("DAEMON_ARGS: --release, --dry-run and --guard are not daemon settings")
    command = memcgctl_command(
        sys.argv[0], sys.executable, shutil.which("memcgctl"), os.getcwd()
    ) + _global_options(env)
    text = daemon_unit(
        command,
        daemon_args,
        pythonpath=_pythonpath(),
        version=__version__,
    )
    if dry_run:
        click.echo(text, nl=False)
        return
    if os.geteuid() != 0:
        raise PermissionDenied("install-unit: run as root (or --dry-run to print the unit)")
    dest = write_unit(unit_dir, name, text)
    if not no_reload:
        daemon_reload()
    unit = name.removesuffix(".service")
    click.echo(f"wrote {dest}" + ("" if no_reload else "; systemd reloaded"))
    click.echo(f"enable and start it:  systemctl enable --now {unit}")
    click.echo(f"its log:              journalctl -u {unit}")
