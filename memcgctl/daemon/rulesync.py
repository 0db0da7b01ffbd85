"""The daemon's rules: reloaded on SIGHUP and when a rules file changes (a bad file is
reported and the last good rules kept), and the cgroup rules applied to every cgroup
that appears or is re-created below the daemon's root (a restarting unit's cgroup is
removed and made again, and its xattrs go with it: a new inode number tells).

Runs before each rescan, so a re-created cgroup gets its badness and OOM delay back
before the rescan that takes it over, i.e. before its next OOM is handled."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from memcgctl.actions.applyrules import RuleChange, apply_to
from memcgctl.daemon.treewatch import TreeWatch
from memcgctl.env import Env
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.state.rules import load_rules, rules_mtime
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import MemcgctlError, Vanished


class RulesSync:
    def __init__(
        self,
        env: Env,
        root: CgroupPath,
        report: Callable[[str, CgroupPath, dict[str, object]], None],
        dry_run: bool = False,
    ) -> None:
        self.env = env
        self.root = root
        self.report = report  # (kind, cgroup, fields): logged and journaled
        self.dry_run = dry_run
        self.fingerprint = rules_mtime(env.rules_dir)
        self.seen: dict[CgroupPath, int] = {}  # cgroup -> inode when the rules were applied
        # the daemon's tree watch (its pass of this rescan); None: a walk per check
        self.tree: TreeWatch | None = None

    def reload(self) -> bool:
        """Load the rules again; False (and a report) when they are bad."""
        try:
            rules = load_rules(self.env.rules_dir)
        except MemcgctlError as exc:
            self.report(
                "rules_rejected", self.root, {"error": exc.message, "kept": "the last good rules"}
            )
            return False
        self.env.rules = rules
        self.seen.clear()  # apply the new rules everywhere
        self.report(
            "rules_loaded",
            self.root,
            {"rules": rules.source, "count": len(rules.rules)},
        )
        return True

    def check(self, force: bool = False) -> list[RuleChange]:
        """Reload if asked or changed; apply the cgroup rules to new cgroups."""
        fingerprint = rules_mtime(self.env.rules_dir)
        reloaded = False
        if force or fingerprint != self.fingerprint:
            self.fingerprint = fingerprint
            reloaded = self.reload()
        rules = self.env.rules
        if not rules.cgroup_rules and not self.seen:
            return []
        fs = self.env.fs
        fresh: list[CgroupPath] = []
        alive: dict[CgroupPath, int] = {}
        p = self.tree.current if self.tree is not None else None
        if p is not None and not p.full and not reloaded:
            # the tree watch says what came and went since the last rescan: no walk
            alive = dict(self.seen)
            for cg in p.removed:
                alive.pop(cg, None)
            for cg, ino in p.created.items():
                if alive.get(cg) != ino:
                    fresh.append(cg)
                alive[cg] = ino
        else:
            known = self.tree.inodes if self.tree is not None and p is not None else None
            for cg, ino in _inodes(fs, self.root) if known is None else known.items():
                alive[cg] = ino
                if self.seen.get(cg) != ino:
                    fresh.append(cg)
        changes = apply_to(fs, fresh, rules, dry_run=self.dry_run)
        self.seen = alive
        for c in changes:
            fields: dict[str, object] = {
                "setting": c.key.removeprefix("memcgctl."),
                "action": c.action,
                "rule": c.rule,
                "value": c.after,
                "previous": c.before,
            }
            self.report("rule_applied", c.cgroup, fields)
        return changes


def _inodes(fs: CgroupFs, root: CgroupPath) -> Iterator[tuple[CgroupPath, int]]:
    for cg in fs.walk(root):
        try:
            yield cg, fs.inode(cg)
        except (Vanished, OSError):
            continue
