"""``status``: what the running daemon(s) manage, from their status files."""

from __future__ import annotations

import os
import time
from typing import Any

import click

from memcgctl.commands.common import output_options, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.render.output import Output, emit_json, say
from memcgctl.vocab.errors import OperationFailed, PermissionDenied
from memcgctl.vocab.units import format_duration_ms


def _ago(iso: object) -> str:
    from datetime import datetime

    try:
        then = datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return "?"
    return format_duration_ms(max(0, int((time.time() - then) * 1000))) + " ago"


def _watch_line(w: dict[str, Any]) -> str:
    ep = w.get("episode")
    delay = format_duration_ms(w.get("delay_ms"))
    where = "" if w.get("domain") == w.get("cgroup") else f" (domain {w.get('domain')})"
    if not isinstance(ep, dict):
        state = "ok"
    else:
        state = f"UNDER OOM for {float(ep.get('seconds', 0)):.1f}s"
        if ep.get("rounds"):
            state += f", {ep['rounds']} kill(s): pid {', '.join(map(str, ep.get('killed', [])))}"
        else:
            state += f", kill in {format_duration_ms(ep.get('delay_left_ms', 0))}"
        if ep.get("frozen"):
            state += ", frozen"
    valve = w.get("valve")
    if isinstance(valve, dict) and valve.get("memory_high") is not None:
        state += f"; valve memory.high={valve['memory_high']}"
    return f"    {w.get('cgroup')}{where}  {w.get('mode')}  delay {delay}  {state}"


def _lines(doc: dict[str, Any]) -> list[str]:
    mode = "shadow mode (--dry-run)" if doc.get("dry_run") else "enforcing"
    h = doc.get("hierarchy") or {}
    managed = doc.get("managed") or []
    lines = [
        f"daemon pid {doc.get('pid')}: running since {doc.get('started')} "
        f"(status updated {_ago(doc.get('updated'))})",
        f"  root {doc.get('root')}, policy {doc.get('policy')}, {mode}; "
        f"cgroup v{h.get('version')} at {h.get('mount')}",
    ]
    if doc.get("host_delay_ms") is not None:
        lines.append(f"  host: OOM delay {format_duration_ms(doc['host_delay_ms'])}")
    lines.append(
        f"  managed: {len(managed)} memcg(s), {doc.get('episodes', 0)} OOM episode(s) in progress"
    )
    lines += [_watch_line(w) for w in managed]
    counts = doc.get("counts") or {}
    shown = ", ".join(f"{k} {v}" for k, v in counts.items()) or "nothing"
    lines.append(f"  since start: {shown}; kernel OOM kills seen: {doc.get('kernel_kills', 0)}")
    if doc.get("dry_run"):
        lines.append(f"  the policy agreed with the kernel: {doc.get('agreed', 0)} time(s)")
    return lines


@click.command("status", epilog=epilog("status"))
@output_options
@pass_env
def status(env: Env, out: Output) -> None:
    """What the running daemon(s) manage: root, managed memcgs and their OOM domains,
    valves, OOM episodes in progress, decisions counted since start.

    Read from the status file each daemon keeps in the state directory
    (STATE_DIR/daemon-PID.json, rewritten on every change and every few seconds).
    Exit status 1 when no daemon that keeps its status there is running.
    """
    running = env.running_daemons(env.state_dir)
    if out.json:
        emit_json({"state_dir": str(env.state_dir), "daemons": running})
    else:
        for i, doc in enumerate(running):
            if i:
                say("")
            for line in _lines(doc):
                say(line)
    hidden = os.path.isdir(env.state_dir) or not os.access(env.state_dir.parent, os.X_OK)
    if not running and hidden and not os.access(env.state_dir, os.R_OK | os.X_OK):
        raise PermissionDenied(
            f"{env.state_dir}: permission denied (the daemon's status is readable by its "
            "owner: run as root)"
        )
    if not running:
        raise OperationFailed(
            f"{env.state_dir}: no running daemon keeps its status here "
            "(a daemon started with another --state-dir keeps it there)"
        )
