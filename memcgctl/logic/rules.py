"""Badness rules: what ``/etc/memcgctl/rules.d/*.toml`` says, validated, and matching.

A rule with a process matcher (``comm``, ``exe``, ``cmdline``, ``uid``/``user``) is a
*process rule*: it gives a badness to the processes it matches, resolved whenever a
snapshot is taken (no pid is tracked); ``cgroup``/``unit`` then narrow it to processes
in matching cgroups.  A rule without a process matcher is a *cgroup rule*: ``memcgctl
apply`` and the daemon write its badness and OOM delay as the cgroup's xattrs.

Files are read in name order, rules in file order; the first matching rule wins.
Pure: the caller reads the files (``state.rules``) and resolves user names.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.constants import BADNESS_MIN, BADNESS_NEVER
from memcgctl.vocab.errors import UsageProblem
from memcgctl.vocab.structs import dataclass
from memcgctl.vocab.units import parse_delay

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PROCESS_KEYS = ("comm", "exe", "cmdline", "uid", "user")
KEYS = frozenset({"name", *PROCESS_KEYS, "cgroup", "unit", "badness", "oom_delay"})
# the unit types systemd gives a cgroup of its own
UNIT_SUFFIXES = (".service", ".scope", ".slice")
MAX_RULES = 10_000


class BadRules(UsageProblem):
    """A rules file that cannot be used: one line naming the file (and line)."""


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob: ``*`` and ``?`` stay inside one path component, ``**`` crosses
    components, ``[...]`` is a character class."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.DOTALL)


def unit_of(cg: CgroupPath) -> str | None:
    """The systemd unit a cgroup is the cgroup of (its last component, when that is
    a unit name), or None."""
    name = cg.name
    return name if name.endswith(UNIT_SUFFIXES) else None


class ProcessFacts:
    """What a process rule may look at, read lazily (``exe`` and ``cmdline`` cost a
    syscall each and only rules that name them read them)."""

    __slots__ = ("_cmdline", "_exe", "cgroup", "comm", "uid")

    def __init__(
        self,
        comm: str,
        uid: int,
        cgroup: CgroupPath,
        exe: Callable[[], str | None],
        cmdline: Callable[[], str | None],
    ) -> None:
        self.comm, self.uid, self.cgroup = comm, uid, cgroup
        self._exe: Callable[[], str | None] | str | None = exe
        self._cmdline: Callable[[], str | None] | str | None = cmdline

    def exe(self) -> str | None:
        if callable(self._exe):
            self._exe = self._exe()
        return self._exe

    def cmdline(self) -> str | None:
        if callable(self._cmdline):
            self._cmdline = self._cmdline()
        return self._cmdline


@dataclass(frozen=True)
class Rule:
    name: str
    file: str
    line: int
    badness: int | None = None
    oom_delay_ms: int | None = None
    sets_delay: bool = False  # oom_delay given ("off": oom_delay_ms None, clear it)
    comm: re.Pattern[str] | None = None
    exe: re.Pattern[str] | None = None
    cmdline: re.Pattern[str] | None = None
    uid: int | None = None
    cgroup: re.Pattern[str] | None = None
    unit: re.Pattern[str] | None = None

    @property
    def for_processes(self) -> bool:
        return any(m is not None for m in (self.comm, self.exe, self.cmdline, self.uid))

    def matches_cgroup(self, cg: CgroupPath) -> bool:
        if self.cgroup is not None and not self.cgroup.match(cg):
            return False
        if self.unit is not None:
            unit = unit_of(cg)
            if unit is None or not self.unit.match(unit):
                return False
        return True

    def matches_process(self, p: ProcessFacts) -> bool:
        if self.uid is not None and p.uid != self.uid:
            return False
        if self.comm is not None and not self.comm.search(p.comm):
            return False
        if (self.cgroup is not None or self.unit is not None) and not self._in_cgroup(p.cgroup):
            return False
        if self.exe is not None:
            exe = p.exe()
            if exe is None or not self.exe.search(exe):
                return False
        if self.cmdline is not None:
            cmdline = p.cmdline()
            if cmdline is None or not self.cmdline.search(cmdline):
                return False
        return True

    def _in_cgroup(self, cg: CgroupPath) -> bool:
        """A process is in a rule's cgroup when its cgroup or an ancestor matches."""
        up: CgroupPath | None = cg
        while up is not None:
            if self.matches_cgroup(up):
                return True
            up = up.parent
        return False


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    source: str = ""  # the directory they came from

    @property
    def process_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.for_processes and r.badness is not None)

    @property
    def cgroup_rules(self) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if not r.for_processes)

    def for_process(self, p: ProcessFacts) -> Rule | None:
        for rule in self.process_rules:
            if rule.matches_process(p):
                return rule
        return None

    def for_cgroup(self, cg: CgroupPath) -> Rule | None:
        for rule in self.cgroup_rules:
            if rule.matches_cgroup(cg):
                return rule
        return None


def _regex(value: Any, key: str, where: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value:
        raise BadRules(f"{where}: {key} must be a non-empty string (a regular expression)")
    try:
        return re.compile(value)
    except re.error as exc:
        raise BadRules(f"{where}: {key} {value!r} is not a regular expression ({exc})") from None


def _glob(value: Any, key: str, where: str) -> re.Pattern[str]:
    if not isinstance(value, str) or not value or "\0" in value:
        raise BadRules(f"{where}: {key} must be a non-empty string (a glob)")
    if key == "cgroup" and not value.startswith("/"):
        value = "/" + value
    return glob_regex(value)


def build_rule(
    table: Mapping[str, Any],
    file: str,
    line: int,
    index: int,
    uid_of_user: Callable[[str], int | None],
) -> Rule:
    """One ``[[rule]]`` table, validated; BadRules names ``file:line``."""
    where = f"{file}:{line}"
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise BadRules(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(KEYS))})")
    name = table.get("name", f"{file.rsplit('/', 1)[-1]}#{index}")
    if not isinstance(name, str) or not name or not name.isprintable() or len(name) > 128:
        raise BadRules(f"{where}: name must be printable text of at most 128 characters")
    where = f"{where}: rule {name!r}"
    kw: dict[str, Any] = {}
    badness = table.get("badness")
    if badness is not None:
        if type(badness) is not int or not BADNESS_MIN <= badness <= BADNESS_NEVER:
            raise BadRules(f"{where}: badness must be an integer 0-1000")
        kw["badness"] = badness
    if "oom_delay" in table:
        delay = table["oom_delay"]
        if not isinstance(delay, str | int) or isinstance(delay, bool):
            raise BadRules(f'{where}: oom_delay must be a duration such as "2s" or "off"')
        kw["sets_delay"] = True
        try:
            kw["oom_delay_ms"] = parse_delay(str(delay))
        except UsageProblem as exc:
            raise BadRules(f"{where}: oom_delay: {exc.message}") from None
    for key in ("comm", "exe", "cmdline"):
        if key in table:
            kw[key] = _regex(table[key], key, where)
    for key in ("cgroup", "unit"):
        if key in table:
            kw[key] = _glob(table[key], key, where)
    if "uid" in table and "user" in table:
        raise BadRules(f"{where}: give uid or user, not both")
    if "uid" in table:
        uid = table["uid"]
        if type(uid) is not int or uid < 0:
            raise BadRules(f"{where}: uid must be a non-negative integer")
        kw["uid"] = uid
    if "user" in table:
        user = table["user"]
        found = uid_of_user(user) if isinstance(user, str) else None
        if found is None:
            raise BadRules(f"{where}: user {user!r}: no such user")
        kw["uid"] = found
    rule = Rule(name=name, file=file, line=line, **kw)
    if rule.for_processes:
        if rule.badness is None:
            raise BadRules(f"{where}: a process rule needs a badness")
        if rule.sets_delay:
            raise BadRules(f"{where}: oom_delay is a cgroup setting (a process rule cannot set it)")
    else:
        if rule.cgroup is None and rule.unit is None:
            raise BadRules(
                f"{where}: matches nothing (give comm, exe, cmdline, uid, user, cgroup or unit)"
            )
        if rule.badness is None and not rule.sets_delay:
            raise BadRules(f"{where}: sets nothing (give badness and/or oom_delay)")
    return rule


def rules_from_document(
    doc: Mapping[str, Any],
    file: str,
    rule_lines: Sequence[int],
    uid_of_user: Callable[[str], int | None],
) -> list[Rule]:
    """The rules of one parsed file; ``rule_lines``: the line of each ``[[rule]]``."""
    extra = sorted(set(doc) - {"rule"})
    if extra:
        raise BadRules(f"{file}: unknown table or key {extra[0]!r} (rules are [[rule]] tables)")
    tables = doc.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise BadRules(f"{file}: 'rule' must be an array of tables ([[rule]])")
    out = []
    for i, table in enumerate(tables):
        line = rule_lines[i] if i < len(rule_lines) else 1
        out.append(build_rule(table, file, line, i + 1, uid_of_user))
    return out
