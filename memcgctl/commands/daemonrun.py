"""The running daemon's own interpreter: ``memcgctl daemon`` parses and checks its
options with click, then execs (same pid) a fresh interpreter that runs
:func:`memcgctl.daemon.main.run` without click (:func:`handoff`, :func:`main`).

What is imported stays resident for the daemon's life: click and what it brings
(``gettext``, ``uuid``, ``platform``, ``locale``) and the command modules were
1.5 MiB of the idle daemon's RSS on the host, which nothing frees once loaded
(dropping them from ``sys.modules`` gave back nothing: their objects share the
allocator's arenas with everything else).  The new interpreter starts like the
guardian (:func:`memcgctl.daemon.guardian.light_argv`: ``-S``, this process's
``sys.path``), so the host's ``.pth`` hooks are not loaded either.  Its
command line ends with the original one (``ps`` still shows ``memcgctl daemon
--root …``); the checked configuration travels in :data:`ENV_VAR`, which it removes
from its environment before anything else (hooks and the guardian never see it).

No click here: like :mod:`memcgctl.cli`, :func:`main` turns our errors into one
stderr line and their exit status.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from memcgctl.daemon.config import DaemonConfig
from memcgctl.env import Env
from memcgctl.render.diag import diagnostic
from memcgctl.vocab.errors import MemcgctlError, from_oserror

ENV_VAR = "MEMCGCTL_DAEMON_RUN"


def encode(env: Env, config: DaemonConfig) -> str:
    cgroup_root = None if env.cgroup_root is None else str(env.cgroup_root)
    roots = {
        "cgroup_root": cgroup_root,
        "proc_root": str(env.proc_root),
        "kmsg": env.kmsg,
        "state_dir": str(env.state_dir),
        "default_state_dir": str(env.default_state_dir),
        "rules_dir": str(env.rules_dir),
    }
    return json.dumps({"env": roots, "config": config.to_json()})


def decode(text: str) -> tuple[Env, DaemonConfig]:
    data = json.loads(text)
    e = data["env"]
    env = Env(
        cgroup_root=None if e["cgroup_root"] is None else Path(e["cgroup_root"]),
        proc_root=Path(e["proc_root"]),
        kmsg=e["kmsg"],
        state_dir=Path(e["state_dir"]),
        default_state_dir=Path(e["default_state_dir"]),
        rules_dir=Path(e["rules_dir"]),
        program=True,
    )
    return env, DaemonConfig.from_json(data["config"])


def interpreter_options() -> list[str]:
    """This interpreter's -O, -B, -W and -X options (``-X dev`` stays on, and so on)."""
    flags = sys.flags
    opts = ["-O"] * flags.optimize + (["-B"] if flags.dont_write_bytecode else [])
    opts += [f"-W{w}" for w in sys.warnoptions]
    for key, value in getattr(sys, "_xoptions", {}).items():
        opts.append(f"-X{key}" if value is True else f"-X{key}={value}")
    return opts


def handoff(env: Env, config: DaemonConfig) -> None:
    """Become the daemon's own interpreter (``os.execv``: the same pid, so systemd,
    the guardian and ``status`` see one process).  Returns only if the exec failed:
    the caller then runs the daemon in this process, as before."""
    from memcgctl.daemon.guardian import light_argv

    if not sys.executable:
        return
    argv = light_argv(sys.executable, __name__, "main", ["memcgctl", *sys.argv[1:]])
    argv[1:1] = interpreter_options()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.environ[ENV_VAR] = encode(env, config)
    try:
        os.execv(sys.executable, argv)
    except OSError:
        del os.environ[ENV_VAR]


def main(args: Sequence[str]) -> int:
    """The daemon's interpreter: run the configuration :func:`handoff` left in the
    environment (``args``: the original command line, for ``ps`` only)."""
    import gc

    gc.freeze()  # as cli.main: what start-up loaded is out of the collector's sight
    text = os.environ.pop(ENV_VAR, None)
    if text is None:
        diagnostic(f"daemon: no {ENV_VAR} (started by `memcgctl daemon` only)")
        return 2
    from memcgctl.daemon.main import run

    try:
        env, config = decode(text)
        run(env, config)
    except MemcgctlError as exc:
        diagnostic(exc.message)
        return int(exc.status)
    except BrokenPipeError:
        return 0
    except OSError as exc:
        err = from_oserror(exc)
        diagnostic(err.message)
        return int(err.status)
    except KeyboardInterrupt:
        return 130
    return 0
