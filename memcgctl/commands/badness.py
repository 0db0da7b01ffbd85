"""``set-badness``/``get-badness`` and ``set-delay``/``get-delay``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from memcgctl.commands.common import (
    CgroupName,
    PidParam,
    dry_run_option,
    output_options,
    pass_env,
    pid_option,
    pids_option,
    unit_option,
    units_option,
)
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.render.diag import warning
from memcgctl.render.output import Output, emit_json, print_aligned, say
from memcgctl.render.views import (
    BADNESS_FIELDS,
    DELAY_FIELDS,
    badness_setting,
    change_line,
    delay_setting,
)
from memcgctl.state.store import (
    BADNESS,
    NAMESPACES,
    OOM_DELAY,
    Setting,
    default_namespace,
    read_setting,
    write_setting,
)
from memcgctl.vocab.constants import BADNESS_DEFAULT
from memcgctl.vocab.errors import NoSuchProcess, PermissionDenied, UsageProblem, Vanished
from memcgctl.vocab.units import format_duration_ms, parse_badness, parse_delay

# A v1 memcg in its OOM delay is paused (oom_kill_disable): its tasks sleep that long.
V1_LONG_DELAY_MS = 60_000

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

namespace_option = click.option(
    "--namespace",
    type=click.Choice(["auto", *NAMESPACES]),
    default="auto",
    show_default=True,
    help="xattr namespace: trusted (root) or user (delegated subtrees); auto picks by uid.",
)


def _change_cgroup_setting(
    env: Env, name: str, key: str, value: int | None, namespace: str, dry_run: bool
) -> tuple[str, Setting, Setting]:
    cg = env.fs.resolve(name)
    ns = default_namespace() if namespace == "auto" else namespace
    before = read_setting(env.fs, cg, key)
    if dry_run:
        after = Setting(value, ns) if value is not None else Setting(None, "default")
    else:
        write_setting(env.fs, cg, key, value, ns)
        after = read_setting(env.fs, cg, key)
    return cg, before, after


def _process_key(env: Env, pid: int) -> tuple[int, int, str]:
    env.check_pid(pid)
    try:
        return pid, env.proc.start_time(pid), env.proc.comm(pid)
    except Vanished:
        raise NoSuchProcess(pid) from None


def _check_victim_candidate(env: Env, pid: int, comm: str) -> None:
    """init and kernel threads are never OOM victims: a badness for them would be a
    silent no-op, so it is refused."""
    if pid == 1:
        raise UsageProblem(f"pid 1 ({comm}): init is never an OOM victim; no badness to set")
    try:
        kthread = env.proc.is_kernel_thread(pid)
    except Vanished:
        raise NoSuchProcess(pid) from None
    if kthread:
        raise UsageProblem(
            f"pid {pid} ({comm}): a kernel thread is never an OOM victim; no badness to set"
        )


def _process_badness(env: Env, pid: int) -> tuple[Setting, int | str | None]:
    """A process's badness as a snapshot resolves it: (setting, where from)."""
    value, source, origin = env.resolver().resolve_pid(pid, env.cgroup_of_pid(pid))
    return Setting(value, source), origin


def _update_registry(env: Env, pid: int, start: int, value: int | None) -> None:
    """Write the registry; a state directory the user may not write is named with the
    option that changes it (the default, /run/memcgctl, is root's)."""
    try:
        env.registry.update({(pid, start): value}, env.is_alive)
    except PermissionDenied as exc:
        raise PermissionDenied(
            f"{exc.message}: process badness lives in the state directory {env.state_dir}; "
            "run as its owner, or pass --state-dir DIR (env MEMCGCTL_STATE_DIR) with one of yours",
            path=exc.path,
        ) from exc


def _process_setting(env: Env, pid: int) -> Setting:
    return _process_badness(env, pid)[0]


def _complete_target(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """set-badness: a cgroup first (unless --pid), then the value."""
    from click.shell_completion import CompletionItem

    if ctx.params.get("pid") is None and not ctx.params.get("unit") and not ctx.params.get("args"):
        return CgroupName().shell_complete(ctx, param, incomplete)
    return [CompletionItem(v) for v in ("default",) if v.startswith(incomplete)]


@click.command("set-badness", epilog=epilog("set-badness"))
@click.argument("args", nargs=-1, metavar="[TARGET] VALUE", shell_complete=_complete_target)
@click.option("--pid", type=PidParam(), default=None, help="Set the badness of process PID.")
@unit_option("Set the badness of the cgroup of systemd unit NAME.")
@click.option(
    "--force", is_flag=True, help="Write it on the hierarchy root (/) too, where it has no effect."
)
@namespace_option
@dry_run_option
@output_options
@pass_env
def set_badness(
    env: Env,
    args: tuple[str, ...],
    pid: int | None,
    unit: str | None,
    force: bool,
    namespace: str,
    dry_run: bool,
    out: Output,
) -> None:
    """Set the badness of a cgroup (TARGET) or a process (--pid PID).

    VALUE is 0-1000 (lower = killed first, 1000 = never) or "default" to clear.
    Cgroups keep it in the xattr trusted.memcgctl.badness (user.* for delegated
    subtrees); processes in the registry in the state directory.
    """
    if pid is not None and unit is not None:
        raise UsageProblem("give --pid or --unit, not both")
    expected = 1 if pid is not None or unit is not None else 2
    if len(args) != expected:
        raise UsageProblem(
            "usage: memcgctl set-badness CGROUP VALUE | set-badness --pid PID VALUE"
            " | set-badness --unit NAME VALUE"
        )
    value = parse_badness(args[-1])
    doc: dict[str, Any]
    if pid is not None:
        pid, start, comm = _process_key(env, pid)
        if value is not None:
            _check_victim_candidate(env, pid, comm)
        before = _process_setting(env, pid)
        if not dry_run:
            _update_registry(env, pid, start, value)
            after = _process_setting(env, pid)
        else:
            after = Setting(value, "process") if value is not None else Setting(None, "default")
        doc = {"pid": pid, "comm": comm, "start_time": start}
        what = f"pid {pid} ({comm})"
    else:
        target = env.unit_cgroup(unit) if unit is not None else args[0]
        if env.fs.resolve(target).is_root and not force:
            raise UsageProblem(
                "/: the hierarchy root is never compared with anything (no siblings), so its "
                "badness has no effect; set it on its children (or --force)"
            )
        cg, before, after = _change_cgroup_setting(env, target, BADNESS, value, namespace, dry_run)
        doc = {"cgroup": cg}
        what = cg
    doc.update(
        {
            "badness": after.value if after.value is not None else BADNESS_DEFAULT,
            "badness_source": after.source,
            "previous": before.value if before.value is not None else BADNESS_DEFAULT,
            "previous_source": before.source,
            "dry_run": dry_run,
        }
    )
    if out.json:
        emit_json(doc)
    else:
        say(change_line(what, "badness", dry_run, badness_setting(before), badness_setting(after)))


@click.command("get-badness", epilog=epilog("get-badness"))
@click.argument("targets", nargs=-1, metavar="[CGROUP]...", type=CgroupName())
@click.option(
    "--pid", "pids", type=PidParam(), multiple=True, help="Show process PID (repeatable)."
)
@units_option("Show the cgroup of systemd unit NAME (repeatable).")
@output_options
@pass_env
def get_badness(
    env: Env, targets: tuple[str, ...], pids: tuple[int, ...], units: tuple[str, ...], out: Output
) -> None:
    """Show the badness of cgroups and processes.

    Without arguments: every cgroup, and every process with a registered badness.
    """
    items: list[dict[str, Any]] = []
    cgroups = [env.fs.resolve(t) for t in targets] + [env.unit_cgroup(u) for u in units]
    if not targets and not pids and not units:
        cgroups = list(env.fs.walk())
        entries = env.registry.load()
        registered = sorted({p for p, _ in entries})
        pids = tuple(p for p in registered if env.proc.exists(p))
    for cg in cgroups:
        try:
            s = read_setting(env.fs, cg, BADNESS)
        except Vanished:
            continue
        items.append(
            {
                "cgroup": cg,
                "badness": s.value if s.value is not None else BADNESS_DEFAULT,
                "badness_source": s.source,
            }
        )
    resolver = env.resolver() if pids else None
    for pid in pids:
        _, _, comm = _process_key(env, pid)
        assert resolver is not None
        try:
            value, source, origin = resolver.resolve_pid(pid, env.cgroup_of_pid(pid))
        except Vanished:
            raise NoSuchProcess(pid) from None
        items.append(
            {
                "pid": pid,
                "comm": comm,
                "badness": value,
                "badness_source": source,
                "badness_from": origin,
            }
        )
    if out.json:
        emit_json(
            {
                "cgroups": [i for i in items if "cgroup" in i],
                "processes": [i for i in items if "pid" in i],
            }
        )
        return
    if items:
        print_aligned(BADNESS_FIELDS, items)


def _complete_delay_args(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """set-delay: a cgroup first (unless --pid), then the duration."""
    from click.shell_completion import CompletionItem

    if ctx.params.get("pid") is None and not ctx.params.get("unit") and not ctx.params.get("args"):
        return CgroupName().shell_complete(ctx, param, incomplete)
    return [
        CompletionItem(v) for v in ("0", "500ms", "2s", "1m", "off") if v.startswith(incomplete)
    ]


@click.command("set-delay", epilog=epilog("set-delay"))
@click.argument("args", nargs=-1, metavar="[CGROUP] DURATION", shell_complete=_complete_delay_args)
@pid_option("Set the OOM delay of the memory cgroup of PID.")
@unit_option("Set the OOM delay of the cgroup of systemd unit NAME.")
@namespace_option
@dry_run_option
@output_options
@pass_env
def set_delay(
    env: Env,
    args: tuple[str, ...],
    pid: int | None,
    unit: str | None,
    namespace: str,
    dry_run: bool,
    out: Output,
) -> None:
    """Set the OOM delay of CGROUP (or of the memcg of --pid PID): how long the daemon
    lets the memcg's own job manager react before it kills by priority.

    DURATION: 500ms, 2s, 1m, up to 24h; 0 = the daemon decides at once; off = no
    delay (the kernel alone decides).  On cgroup v1 the memcg is paused for the
    whole delay, so more than a minute draws a warning.
    """
    if pid is not None and unit is not None:
        raise UsageProblem("give --pid or --unit, not both")
    expected = 1 if pid is not None or unit is not None else 2
    if len(args) != expected:
        raise UsageProblem(
            "usage: memcgctl set-delay CGROUP DURATION | set-delay --pid PID DURATION"
            " | set-delay --unit NAME DURATION"
        )
    value = parse_delay(args[-1])
    if unit is not None:
        cgroup: str = env.unit_cgroup(unit)
    else:
        cgroup = env.cgroup_of_pid(pid) if pid is not None else args[0]
    cg, before, after = _change_cgroup_setting(env, cgroup, OOM_DELAY, value, namespace, dry_run)
    if value is not None and value > V1_LONG_DELAY_MS and env.fs.version == 1:
        warning(
            f"{cg}: on cgroup v1 the daemon pauses an OOM for the whole "
            f"delay ({format_duration_ms(value)}): the memcg's tasks may hang that long"
        )
    if out.json:
        emit_json(
            {
                "cgroup": cg,
                "oom_delay_ms": after.value,
                "oom_delay_source": after.source,
                "previous_ms": before.value,
                "dry_run": dry_run,
            }
        )
    else:
        say(change_line(cg, "OOM delay", dry_run, delay_setting(before), delay_setting(after)))


@click.command("get-delay", epilog=epilog("get-delay"))
@click.argument("cgroups", nargs=-1, metavar="[CGROUP]...", type=CgroupName())
@pids_option("Show the memory cgroup of PID (repeatable).")
@units_option("Show the cgroup of systemd unit NAME (repeatable).")
@output_options
@pass_env
def get_delay(
    env: Env, cgroups: tuple[str, ...], pids: tuple[int, ...], units: tuple[str, ...], out: Output
) -> None:
    """Show the OOM delay of cgroups (default: every cgroup in the hierarchy)."""
    paths = [env.fs.resolve(c) for c in cgroups] + [env.cgroup_of_pid(p) for p in pids]
    paths += [env.unit_cgroup(u) for u in units]
    if not cgroups and not pids and not units:
        paths = list(env.fs.walk())
    items: list[dict[str, Any]] = []
    for cg in paths:
        try:
            s = read_setting(env.fs, cg, OOM_DELAY)
        except Vanished:
            continue
        items.append({"cgroup": cg, "oom_delay_ms": s.value, "oom_delay_source": s.source})
    if out.json:
        emit_json({"cgroups": items})
        return
    print_aligned(DELAY_FIELDS, items)
