"""``memcgctl apply``: write what the cgroup rules say as the cgroups' xattrs."""

from __future__ import annotations

from pathlib import Path

import click

from memcgctl.commands.common import CgroupName, dry_run_option, output_options, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.render.output import Output, emit_json, say
from memcgctl.vocab.units import format_duration_ms


def _value(key: str, value: int | None) -> str:
    if key.endswith("oom_delay_ms"):
        return format_duration_ms(value)
    return "unset" if value is None else str(value)


@click.command("apply", epilog=epilog("apply"))
@click.argument("root_name", metavar="[CGROUP]", required=False, type=CgroupName())
@click.option(
    "--rules",
    "rules_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Rules directory (default: the global --rules, /etc/memcgctl/rules.d).",
)
@dry_run_option
@output_options
@pass_env
def apply(
    env: Env, root_name: str | None, rules_dir: Path | None, dry_run: bool, out: Output
) -> None:
    """Write the cgroup rules' badness and OOM delay on every matching cgroup below
    CGROUP (default: the whole hierarchy).

    An explicit setting (set-badness, set-delay) is kept: a rule writes only where
    nothing is set or where a rule wrote the value, and removes the values it wrote
    once no rule matches.  The daemon does the same for cgroups that appear or are
    re-created while it runs.
    """
    from memcgctl.actions.applyrules import apply_to
    from memcgctl.state.rules import load_rules

    rules = load_rules(rules_dir, must_exist=True) if rules_dir is not None else env.rules
    root = env.fs.resolve(root_name if root_name is not None else "/")
    changes = apply_to(env.fs, env.fs.walk(root), rules, dry_run=dry_run)
    if out.json:
        emit_json(
            {
                "rules": rules.source,
                "dry_run": dry_run,
                "changes": [c.to_json() for c in changes],
            }
        )
        return
    for c in changes:
        setting = c.key.removeprefix("memcgctl.").replace("oom_delay_ms", "OOM delay")
        if c.action == "kept":
            say(
                f"{c.cgroup}: kept {setting} {_value(c.key, c.before)} (set by hand; "
                f"rule {c.rule} not applied)"
            )
            continue
        verb = ("would " if dry_run else "") + ("set" if c.action == "set" else "clear")
        why = f"rule {c.rule}" if c.action == "set" else "no rule matches any more"
        say(
            f"{c.cgroup}: {verb} {setting} {_value(c.key, c.after)} ({why}), "
            f"was {_value(c.key, c.before)}"
        )
    if not changes:
        say(f"nothing to change ({len(rules.cgroup_rules)} cgroup rules in {rules.source})")
