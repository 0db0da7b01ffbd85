"""Read the badness rules directory (default ``/etc/memcgctl/rules.d``), root's only.

Rules decide who is killed first on the whole host, so they are root's: the directory
and every ``*.toml`` file in it must be owned by root and writable by nobody else, and
files are opened without following symlinks.  Anything else is refused (exit 4), the
same way the state directory is hardened.  A directory that does not exist means no
rules.  A file that does not parse, or a rule that does not validate, is one error
naming the file and line (exit 2).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

from memcgctl.logic.rules import MAX_RULES, BadRules, Rule, RuleSet, rules_from_document
from memcgctl.render.diag import warning
from memcgctl.state.statedir import Corrupt, read_bounded
from memcgctl.vocab.errors import PermissionDenied

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_FILE_BYTES = 1 << 20
_AT_LINE = re.compile(r"\(at line ([0-9]+)")
_RULE_HEADER = re.compile(rb"^[ \t]*\[\[[ \t]*rule[ \t]*\]\]", re.M)


def _refuse(path: Path, why: str) -> PermissionDenied:
    return PermissionDenied(f"{path}: refusing the rules: {why}")


def _check_owner(path: Path, st: os.stat_result) -> None:
    if st.st_uid != 0:
        raise _refuse(path, f"owned by uid {st.st_uid}, not root (rules are root's)")
    if st.st_mode & 0o022:
        raise _refuse(path, f"writable by other users (mode {stat.S_IMODE(st.st_mode):04o})")


def _uid_of_user(name: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except (KeyError, UnicodeError, ValueError):
        return None


def rules_mtime(rules_dir: Path) -> tuple[float, ...]:
    """A cheap fingerprint for the daemon's reload check: the directory's and each
    file's mtime (empty when there is no directory)."""
    try:
        names = sorted(os.listdir(rules_dir))
        out = [os.stat(rules_dir).st_mtime]
    except OSError:
        return ()
    for name in names:
        if name.endswith(".toml"):
            try:
                out.append(os.lstat(rules_dir / name).st_mtime)
            except OSError:
                continue
    return tuple(out)


def _parse_file(path: Path, data: bytes) -> list[Rule]:
    # lazily: only a host with rules files pays for the TOML parser
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise BadRules(f"{path}:{line}: not UTF-8 text") from None
    try:
        doc: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # lineno arrived in 3.14; before, the message ends "(at line N, column M)"
        at = _AT_LINE.search(str(exc))
        where = f"{path}:{at.group(1)}" if at else str(path)
        msg = str(exc).split(" (at ")[0]
        raise BadRules(f"{where}: not valid TOML ({msg})") from None
    except RecursionError:
        raise BadRules(f"{path}: nested too deeply") from None
    lines = [data[: m.start()].count(b"\n") + 1 for m in _RULE_HEADER.finditer(data)]
    return rules_from_document(doc, str(path), lines, _uid_of_user)


def load_rules(rules_dir: Path, must_exist: bool = False) -> RuleSet:
    """Every rule in ``rules_dir/*.toml`` (name order).  Raises BadRules (exit 2) or
    PermissionDenied (exit 4); no directory: no rules (unless ``must_exist``)."""
    try:
        st = os.stat(rules_dir)
    except FileNotFoundError:
        if must_exist:
            raise BadRules(f"{rules_dir}: no such rules directory") from None
        return RuleSet((), str(rules_dir))
    except OSError as exc:
        raise _refuse(rules_dir, exc.strerror or str(exc)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise BadRules(f"{rules_dir}: not a directory")
    _check_owner(rules_dir, st)
    try:
        names = sorted(n for n in os.listdir(rules_dir) if n.endswith(".toml"))
    except PermissionError:
        if os.geteuid() != 0 and not must_exist:  # root's, unreadable to us: not ours to use
            warning(f"{rules_dir}: not readable; ranking without the rules")
            return RuleSet((), str(rules_dir))
        raise _refuse(rules_dir, "permission denied") from None
    except OSError as exc:
        raise _refuse(rules_dir, exc.strerror or str(exc)) from None
    rules: list[Rule] = []
    for name in names:
        path = rules_dir / name
        try:
            data = read_bounded(path, MAX_FILE_BYTES)
            fd_st = os.lstat(path)
        except Corrupt as exc:
            raise BadRules(f"{path}: {exc.reason}") from None
        except OSError as exc:
            raise _refuse(path, exc.strerror or str(exc)) from None
        if data is None:  # removed meanwhile
            continue
        _check_owner(path, fd_st)
        rules.extend(_parse_file(path, data))
        if len(rules) > MAX_RULES:
            raise BadRules(f"{rules_dir}: more than {MAX_RULES} rules")
    return RuleSet(tuple(rules), str(rules_dir))
