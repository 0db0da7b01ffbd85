"""The daemon's systemd unit, as ``memcgctl install-unit`` writes it: the one place its
text is made.

The unit runs the ``memcgctl`` that wrote it, by absolute path (a pipx or venv install
is not on systemd's ``PATH``, which is why ``ExecStart=/usr/bin/env memcgctl`` failed
there), and releases a dead daemon's knobs in ``ExecStopPost=``.  Pure: the caller
finds the command (:func:`memcgctl_command`) and writes the file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

UNIT_NAME = "memcgctl-daemon.service"
# systemd kills a daemon that sends no WATCHDOG=1 for this long (SIGABRT), and
# ExecStopPost= then releases its valves: a hung daemon holds a memcg back at most this.
WATCHDOG_SEC = 10


def memcgctl_command(
    argv0: str,
    executable: str,
    which: str | None,
    cwd: str,
) -> list[str]:
    """The absolute command that runs this memcgctl.

    ``argv0`` is ``sys.argv[0]``: the console script (``/usr/bin/memcgctl``,
    ``~/.local/bin/memcgctl`` for pipx, ``VENV/bin/memcgctl``) is used as it is,
    made absolute against ``cwd`` but not resolved (a venv's script must keep its
    own path); ``python -m memcgctl`` (``argv0`` ends in ``__main__.py``) becomes
    ``EXECUTABLE -m memcgctl`` with the interpreter as it is (``VENV/bin/python3``
    finds the venv's packages, the resolved base interpreter does not).  Anything
    else falls back to ``which`` (``shutil.which("memcgctl")``) and then to
    ``EXECUTABLE -m memcgctl``.
    """
    base = os.path.basename(argv0)
    if base == "__main__.py" or argv0 in ("-m", "-c", ""):
        return [executable, "-m", "memcgctl"]
    if base == "memcgctl" and "/" in argv0:
        return [os.path.normpath(os.path.join(cwd, argv0))]
    if which is not None and os.path.isabs(which):
        return [which]
    return [executable, "-m", "memcgctl"]


def _quote(word: str) -> str:
    """One word of a systemd command line: ``%`` and ``$`` doubled (no specifiers, no
    variable expansion), quoted when it holds a blank, a quote or a backslash."""
    w = word.replace("%", "%%").replace("$", "$$")
    if w and not any(c in w for c in " \t\"'\\;"):
        return w
    return '"' + w.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as an ``Exec*=`` value."""
    return " ".join(_quote(a) for a in argv)


def daemon_unit(
    command: Sequence[str],
    daemon_args: Sequence[str] = (),
    *,
    notify: bool = True,
    pythonpath: str | None = None,
    version: str = "",
) -> str:
    """The unit's text.  ``command`` runs memcgctl (:func:`memcgctl_command`),
    ``daemon_args`` go after ``daemon`` in ``ExecStart=``; ``--root`` among them also
    goes to the ``--release`` of ``ExecStopPost=``.  ``notify``: the daemon sends
    ``READY=1`` and watchdog pings (``Type=notify``); without it, ``Type=simple``."""
    args = list(daemon_args)
    release_root: list[str] = []
    for i, a in enumerate(args):
        if a == "--root" and i + 1 < len(args):
            release_root = ["--root", args[i + 1]]
        elif a.startswith("--root="):
            release_root = [a]
    guardian = "--guardian=systemd" if notify else "--guardian=none"
    start = command_line([*command, "daemon", guardian, *args])
    stop_post = command_line([*command, "daemon", "--release", *release_root])
    lines = [
        f"# Written by `memcgctl install-unit`{f' (memcgctl {version})' if version else ''}.",
        "# Runs this memcgctl by its absolute path; `memcgctl install-unit` again after",
        "# moving or reinstalling it.",
        "[Unit]",
        "Description=memcgctl userspace OOM handler (strict priorities, OOM delays)",
        "Documentation=man:memcgctl(1)",
        "After=local-fs.target",
        "",
        "[Service]",
    ]
    if notify:
        lines += [
            "# READY=1 once the valves are set, WATCHDOG=1 from the loop: a hung daemon is",
            "# killed after WatchdogSec= and ExecStopPost= releases what it held.",
            "Type=notify",
            "NotifyAccess=main",
            f"WatchdogSec={WATCHDOG_SEC}s",
        ]
    else:
        lines += ["Type=simple"]
    if pythonpath:
        lines += [f"Environment={_quote('PYTHONPATH=' + pythonpath)}"]
    lines += [
        f"ExecStart={start}",
        "# After every stop, a crash or SIGKILL included: restore every knob the dead",
        "# daemon changed (oom_kill_disable, the v2 memory.high valve, cgroup.freeze; each",
        "# marked trusted.memcgctl.daemon with its previous value). No guardian process is",
        "# needed under systemd (--guardian=systemd: this and the watchdog do its job).",
        f"ExecStopPost={stop_post}",
        "Restart=always",
        "RestartSec=1s",
        "# The handler must never be the OOM victim, must not wait for its own pages, and",
        "# must get the CPU while the host is thrashing.",
        "OOMScoreAdjust=-1000",
        "LimitMEMLOCK=infinity",
        "Nice=-10",
        "# Log lines carry a <N> syslog priority prefix, which journald reads",
        "# (journalctl -u memcgctl-daemon -p warning: the kills).",
        "StandardError=journal",
        "SyslogLevelPrefix=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
    ]
    return "\n".join(lines) + "\n"
