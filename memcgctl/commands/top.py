"""``top``: a live view of the memcgs under a root (systemd-cgtop, below)."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator

import click

from memcgctl.commands.common import CgroupName, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.render.output import say
from memcgctl.vocab.errors import UsageProblem
from memcgctl.vocab.units import parse_duration_ms


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """stdin in cbreak mode (single keys, no echo) while the view runs, if a terminal."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@click.command("top", epilog=epilog("top"))
@click.argument("cgroup", required=False, type=CgroupName())
@click.option(
    "--delay",
    "-d",
    "interval",
    default="1s",
    show_default=True,
    metavar="DURATION",
    help="Time between refreshes.",
)
@click.option(
    "--iterations",
    "-n",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after N refreshes; plain text, one screen after another (as top -b).",
)
@click.option(
    "--policy",
    type=click.Choice(["priority", "kernel"]),
    default="priority",
    show_default=True,
    help="Whose next victim to show (key p switches).",
)
@click.option(
    "--sort",
    type=click.Choice(["tree", "usage", "badness", "name"]),
    default="tree",
    show_default=True,
    help="Row order (key s cycles).",
)
@pass_env
def top(
    env: Env,
    cgroup: str | None,
    interval: str,
    iterations: int | None,
    policy: str,
    sort: str,
) -> None:
    """A live view of the memcgs under CGROUP (default: /), like systemd-cgtop.

    Usage against the limit as a bar (| marks the OOM valve a daemon holds), badness,
    OOM delay, OOM state (with the daemon's countdown during an episode), tasks; the
    next victim of every OOM domain under the policy (the root and every memcg with a
    limit), and the recent kills (kernel and memcgctl).  Keys: s sort, p policy, q quit.
    Not on a terminal, or with --iterations N: plain screens, one per refresh.
    """
    from memcgctl.render.topview import frame_lines
    from memcgctl.vocab.records import utc_now_iso
    from memcgctl.watch.topdata import TopModel

    seconds = parse_duration_ms(interval) / 1000
    if seconds < 0.1:
        raise UsageProblem(f"--delay {interval}: at least 100ms")
    root = env.fs.resolve(cgroup or "/")
    model = TopModel(env, root, policy, sort)
    model.open()
    try:
        if iterations is not None or not sys.stdout.isatty():
            for i in range(iterations or 1):
                if i:
                    time.sleep(seconds)
                    say("")
                for line in frame_lines(model.refresh(), utc_now_iso()[:19] + "Z"):
                    say(line)
            return
        _live(model, seconds)
    finally:
        model.close()


def _live(model: object, seconds: float) -> None:
    from rich.console import Console
    from rich.live import Live

    from memcgctl.render.topview import renderable
    from memcgctl.vocab.records import utc_now_iso
    from memcgctl.watch.topdata import TopModel

    assert isinstance(model, TopModel)
    with _keys() as fd, Live(console=Console(), auto_refresh=False, screen=True) as live:
        while True:
            live.update(renderable(model.refresh(), utc_now_iso()[:19] + "Z"), refresh=True)
            deadline = time.monotonic() + seconds
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                if fd is None:
                    time.sleep(left)
                    continue
                if not select.select([fd], [], [], left)[0]:
                    continue
                key = os.read(fd, 1).decode(errors="replace").lower()
                if key == "q":
                    return
                if key == "p":
                    model.next_policy()
                    break
                if key == "s":
                    model.next_sort()
                    break
