"""Write what the cgroup rules say as the cgroups' xattrs (``memcgctl apply``, and the
daemon when a matching cgroup appears or is re-created).

An explicit setting beats a rule: a value is written only where there is none, or
where the one there was written by a rule — each value a rule writes is marked
(``trusted.memcgctl.badness_rule`` / ``trusted.memcgctl.oom_delay_ms_rule`` hold the
rule's name; ``set-badness``/``set-delay`` remove the mark, making it explicit).  A
rule-written value whose rule no longer matches (rule edited or removed) is removed.
Rules are root's, so everything here is ``trusted.*``.
"""

from __future__ import annotations

from collections.abc import Iterable

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.logic.rules import Rule, RuleSet
from memcgctl.state.store import BADNESS, OOM_DELAY, RULE_MARKS, read_namespace
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import Vanished
from memcgctl.vocab.structs import NamedTuple

NAMESPACE = "trusted"


class RuleChange(NamedTuple):
    cgroup: CgroupPath
    key: str  # memcgctl.badness | memcgctl.oom_delay_ms
    action: str  # set | cleared | kept (an explicit setting wins)
    rule: str | None  # the rule that matched (None: none does any more)
    before: int | None
    after: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "cgroup": self.cgroup,
            "setting": self.key.removeprefix("memcgctl."),
            "action": self.action,
            "rule": self.rule,
            "before": self.before,
            "after": self.after,
        }


def _wanted(rule: Rule | None, key: str) -> tuple[bool, int | None]:
    if rule is None:
        return False, None
    if key == BADNESS:
        return rule.badness is not None, rule.badness
    return rule.sets_delay, rule.oom_delay_ms


def plan_cgroup(fs: CgroupFs, cg: CgroupPath, rules: RuleSet) -> list[RuleChange]:
    """What applying ``rules`` to ``cg`` would change (raises Vanished)."""
    rule = rules.for_cgroup(cg)
    name = rule.name if rule is not None else None
    out: list[RuleChange] = []
    for key in (BADNESS, OOM_DELAY):
        wants, value = _wanted(rule, key)
        current = read_namespace(fs, cg, key, NAMESPACE)
        raw = fs.get_xattr(cg, f"{NAMESPACE}.{RULE_MARKS[key]}")
        mark = raw.decode("utf-8", "replace") if raw is not None else None
        if current is not None and mark is None:
            if wants:
                out.append(RuleChange(cg, key, "kept", name, current, current))
        elif wants and value is not None:
            if current != value or mark != name:
                out.append(RuleChange(cg, key, "set", name, current, value))
        elif mark is not None:
            out.append(RuleChange(cg, key, "cleared", name, current, None))
    return out


def write_change(fs: CgroupFs, c: RuleChange) -> None:
    mark = f"{NAMESPACE}.{RULE_MARKS[c.key]}"
    if c.action == "set" and c.after is not None and c.rule is not None:
        fs.set_xattr(c.cgroup, f"{NAMESPACE}.{c.key}", str(c.after).encode())
        fs.set_xattr(c.cgroup, mark, c.rule.encode())
    elif c.action == "cleared":
        fs.remove_xattr(c.cgroup, f"{NAMESPACE}.{c.key}")
        fs.remove_xattr(c.cgroup, mark)


def apply_to(
    fs: CgroupFs, cgroups: Iterable[CgroupPath], rules: RuleSet, dry_run: bool = False
) -> list[RuleChange]:
    """Apply the cgroup rules to each cgroup; cgroups that vanish meanwhile are skipped."""
    changes: list[RuleChange] = []
    for cg in cgroups:
        try:
            planned = plan_cgroup(fs, cg, rules)
            if not dry_run:
                for c in planned:
                    write_change(fs, c)
        except Vanished:
            continue
        changes.extend(planned)
    return changes
