"""The layering ARCHITECTURE.md describes, checked on the source: every ``memcgctl``
import (module level, inside functions and under ``TYPE_CHECKING`` alike) goes from a
layer to the same layer or one below it; the pure layers import no I/O modules; only
``cli.py`` and ``commands/`` define command-line options or map errors to exit codes."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "memcgctl"

# lowest first; a module may import its own layer and the layers before it
LAYERS = [
    "vocab",
    "logic",
    "kernel",
    "state",
    "inputs",
    "snapshot",
    "env",
    "actions",
    "render",
    "watch",
    "daemon",
    "commands",
    "cli",
    "__main__",
]
# stdlib-only leaf modules every layer may use to write a line on stderr
ANYWHERE = {"memcgctl.render.diag", "memcgctl.render.safetext"}
PURE = {"vocab", "logic"}
# (not ``signal``: its Signals enum is vocabulary, parsing ``-s TERM`` is pure)
IO_MODULES = {"os", "io", "select", "socket", "subprocess", "shutil", "fcntl", "mmap"}
IO_MODULES |= {"threading", "urllib", "http", "pathlib", "tempfile", "ctypes", "sys"}
IO_MODULES |= {
    "_ctypes",
    "_thread",
    "_queue",
    "resource",
}  # (the daemon's lighter ways to the same)


def layer_of(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def sources() -> Iterator[Path]:
    yield from sorted(p for p in PKG.rglob("*.py") if p.name != "__init__.py" or p.parent != PKG)


def imports(path: Path) -> Iterator[tuple[int, str]]:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "memcgctl":  # from memcgctl import __version__
                continue
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def target_layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "memcgctl" or len(parts) < 2:
        return None
    return parts[1]


def test_every_module_belongs_to_a_layer() -> None:
    unknown = {str(p.relative_to(PKG)) for p in sources() if layer_of(p) not in LAYERS}
    assert not unknown, f"add these to ARCHITECTURE.md and LAYERS: {sorted(unknown)}"


@pytest.mark.parametrize("path", list(sources()), ids=lambda p: str(p.relative_to(PKG)))
def test_imports_go_down_the_layers(path: Path) -> None:
    mine = LAYERS.index(layer_of(path))
    wrong = []
    for line, module in imports(path):
        layer = target_layer(module)
        if layer is None or module in ANYWHERE:
            continue
        assert layer in LAYERS, f"{path.name}:{line}: {module} is in no layer"
        if LAYERS.index(layer) > mine:
            wrong.append(f"{path.relative_to(PKG)}:{line} imports {module} ({layer} is above)")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize(
    "path",
    [p for p in sources() if layer_of(p) in PURE],
    ids=lambda p: str(p.relative_to(PKG)),
)
def test_pure_layers_do_no_io(path: Path) -> None:
    bad = [
        f"{line}: {module}"
        for line, module in imports(path)
        if module.split(".")[0] in IO_MODULES | {"click", "rich", "tabulate"}
    ]
    assert not bad, f"{path.relative_to(PKG)} imports I/O or UI modules: {bad}"


def test_only_the_command_layer_speaks_click() -> None:
    speaking = sorted(
        str(p.relative_to(PKG))
        for p in sources()
        if any(m.split(".")[0] == "click" for _, m in imports(p))
        and layer_of(p) not in {"commands", "cli", "render"}
    )
    assert speaking == []
    # the rendering layer may print with click.echo, never define options or map errors
    for p in (PKG / "render").glob("*.py"):
        text = p.read_text()
        assert "click.option" not in text and "click.ClickException" not in text, p.name


def test_the_checker_sees_a_violation(tmp_path: Path) -> None:
    """The import walk finds function-local and TYPE_CHECKING imports too."""
    src = tmp_path / "m.py"
    src.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from memcgctl.commands.common import Output\n"
        "def f() -> None:\n    from memcgctl.daemon.core import DaemonCore\n"
    )
    found = [m for _, m in imports(src)]
    assert "memcgctl.commands.common" in found and "memcgctl.daemon.core" in found


# -- one definition of the kernel's score -------------------------------------------------

SCORE_HOME = "logic/oombadness.py"


def _adj_arithmetic(tree: ast.AST) -> list[int]:
    """Lines that multiply something by an ``oom_score_adj`` (the kernel's adj term:
    ``oom_score_adj * (totalpages / 1000)``), scale points by 1000 (the printed score,
    /proc/PID/oom_score) or compare an adj with ``OOM_SCORE_ADJ_MIN``."""

    def names(node: ast.AST) -> set[str]:
        out = set()
        for n in ast.walk(node):
            if isinstance(n, ast.Name):
                out.add(n.id)
            elif isinstance(n, ast.Attribute):
                out.add(n.attr)
        return out

    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult):
            both = names(node.left) | names(node.right)
            per_mille = any(
                isinstance(x, ast.Constant) and x.value == 1000 for x in (node.left, node.right)
            )
            if any("adj" in n for n in both) or (per_mille and any("points" in n for n in both)):
                lines.append(node.lineno)
        elif isinstance(node, ast.Compare) and "OOM_SCORE_ADJ_MIN" in names(node):
            lines.append(node.lineno)
    return lines


def _minus_thousand(tree: ast.AST) -> list[int]:
    return [
        n.lineno
        for n in ast.walk(tree)
        if isinstance(n, ast.UnaryOp)
        and isinstance(n.op, ast.USub)
        and isinstance(n.operand, ast.Constant)
        and n.operand.value == 1000
    ]


def test_the_kernel_score_is_defined_once() -> None:
    """``oom_badness`` arithmetic (the adj term, the -1000 test) lives in one module;
    ``kernelheuristic`` (live) and ``oomscore`` (saved reports) call it; the constant
    -1000 is written once (vocab) and so is the badness fallback rule that uses it."""
    where: dict[str, list[int]] = {}
    for p in sources():
        tree = ast.parse(p.read_text(), str(p))
        rel = str(p.relative_to(PKG))
        if rel == "vocab/constants.py":
            continue  # OOM_SCORE_ADJ_MIN itself and fallback_badness
        hits = _adj_arithmetic(tree) + _minus_thousand(tree)
        if hits:
            where[rel] = hits
    assert set(where) == {SCORE_HOME}, where
    for caller in ("logic/kernelheuristic.py", "logic/oomscore.py"):
        called = {
            n.func.id
            for n in ast.walk(ast.parse((PKG / caller).read_text()))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert {"oom_badness", "may_be_chosen"} <= called, caller
    defined = [
        str(p.relative_to(PKG))
        for p in sources()
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "OOM_SCORE_ADJ_MIN" for t in n.targets)
    ]
    assert defined == ["vocab/constants.py"]
    fallback = sorted(
        {str(p.relative_to(PKG)) for p in sources() if _fallback_rule(ast.parse(p.read_text()))}
    )
    assert fallback == ["vocab/constants.py"], "call vocab.constants.fallback_badness"


def _fallback_rule(tree: ast.AST) -> bool:
    """A ``(BADNESS_NEVER, "oom_score_adj")`` pair, a conditional choosing BADNESS_NEVER,
    or ``badness_source=`` set to ``"oom_score_adj"``: the fallback rule written out."""
    for n in ast.walk(tree):
        if isinstance(n, ast.Tuple | ast.IfExp):
            inside = list(ast.walk(n))
            if any(isinstance(x, ast.Name) and x.id == "BADNESS_NEVER" for x in inside) and (
                isinstance(n, ast.IfExp)
                or any(isinstance(x, ast.Constant) and x.value == "oom_score_adj" for x in inside)
            ):
                return True
        if (
            isinstance(n, ast.keyword)
            and n.arg == "badness_source"
            and any(isinstance(x, ast.Constant) and x.value == "oom_score_adj" for x in ast.walk(n))
        ):
            return True
    return False


def test_the_score_checker_sees_a_copy() -> None:
    copy = ast.parse(
        "def f(a, t):\n    return a.oom_score_adj * (t // 1000) if a != -1000 else 0\n"
    )
    assert len(_adj_arithmetic(copy)) == 1 and len(_minus_thousand(copy)) == 1
    assert _adj_arithmetic(ast.parse("s = points * 1000 // total\n")) == [1]
    rule = "b = BADNESS_NEVER if adj == -1000 else BADNESS_DEFAULT\n"
    assert _fallback_rule(ast.parse(rule))
    assert _fallback_rule(ast.parse('v, s = BADNESS_NEVER, "oom_score_adj"\n'))
    assert not _fallback_rule(ast.parse("ok = p.badness >= BADNESS_NEVER\n"))


def test_logic_builds_no_json() -> None:
    """A pure result (an OOM report, a kill explanation, a decision) becomes a JSON
    document in render/ only: no ``to_json`` or ``…_json`` builder in logic/."""
    builders = [
        f"{p.relative_to(PKG)}:{n.lineno} {n.name}"
        for p in sources()
        if layer_of(p) == "logic"
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.FunctionDef) and (n.name == "to_json" or n.name.endswith("_json"))
    ]
    assert builders == [], "move these to render/"


def test_commands_build_no_json_documents() -> None:
    """A command wires: its documents are assembled in render/ (predict-victim's in
    render/documents.py, the hierarchy envelope in render/envelope.py), never by a
    ``…_json`` builder of its own or a second copy of the envelope."""
    builders = [
        f"{p.relative_to(PKG)}:{n.lineno} {n.name}"
        for p in sources()
        if layer_of(p) == "commands"
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.FunctionDef) and n.name.endswith("_json")
    ]
    assert builders == [], "move these to render/"
    envelopes = [
        f"{p.relative_to(PKG)}:{n.lineno}"
        for p in sources()
        if str(p.relative_to(PKG)) != "render/envelope.py"
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.Dict)
        and {k.value for k in n.keys if isinstance(k, ast.Constant)} == {"mount", "version"}
    ]
    assert envelopes == [], "use render.envelope.hierarchy_json"


# -- no English in logic/ ------------------------------------------------------------------

# logic/ returns data; the sentences are made in render/ (reasontext, reportwords).  The
# modules below may still hold words, each for a stated reason.
ENGLISH_ALLOWED = {
    # the kernel's own words: literals and regex pieces matching what the kernel prints
    "logic/oomlines.py": "kernel text matched",
    "logic/logtext.py": "kernel text matched",
    # Prometheus ``# HELP`` lines: part of each metric's definition (the exposition format)
    "logic/counters.py": "metric help texts",
}
REGEX_CALLS = {"compile", "match", "search", "fullmatch", "sub", "split", "findall", "finditer"}


def english_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals of three words or more, except docstrings, regular expressions
    and error messages (an error carries its one line: ``raise X("...")``)."""
    skip: set[int] = set()
    for n in ast.walk(tree):
        body = getattr(n, "body", None)
        if (
            isinstance(n, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
        ):
            skip.add(id(body[0].value))
        elif isinstance(n, ast.Call):
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            if name in REGEX_CALLS and n.args:
                skip.update(id(x) for x in ast.walk(n.args[0]))
        elif isinstance(n, ast.Raise):
            skip.update(id(x) for x in ast.walk(n))
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip:
            words = [w for w in n.value.split() if sum(c.isalpha() for c in w) >= 2]
            if len(words) >= 3:
                found.append((n.lineno, n.value))
    return found


def test_logic_writes_no_sentences() -> None:
    found = [
        f"{p.relative_to(PKG)}:{line}: {text[:60]!r}"
        for p in sources()
        if layer_of(p) == "logic" and str(p.relative_to(PKG)) not in ENGLISH_ALLOWED
        for line, text in english_literals(ast.parse(p.read_text()))
    ]
    assert found == [], "return data (vocab) and make the words in render/"


def test_the_english_checker_sees_a_sentence() -> None:
    src = (
        '"""A docstring of many words is fine."""\n'
        "import re\n"
        'PAT = re.compile(r"Killed process (\\d+) of many words")\n'
        "def f(n: int) -> list[str]:\n"
        '    if n < 0:\n        raise ValueError(f"{n}: not a valid count here")\n'
        '    return [f"the kernel chose pid {n} instead", "oom_kill", "a b c"]\n'
    )
    found = [text for _, text in english_literals(ast.parse(src))]
    assert found == ["the kernel chose pid "], found


def _calls(tree: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            f = n.func
            out.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return out


def test_one_kmsg_pipeline_and_one_oom_line_reader() -> None:
    """Raw kmsg records become events in one function (``kmsg_events``: parsed,
    pre-filtered, ``pr_cont`` joined, fed to the one reader), and only the reader
    (``OomAssembler``) feeds records; the daemon, ``events --follow`` and
    ``explain-kill``'s live report call it."""
    assembling = sorted(
        str(p.relative_to(PKG))
        for p in sources()
        if _calls(ast.parse(p.read_text())) & {"join_continuations", "parse_records"}
    )
    assert assembling == ["logic/oomassembler.py"]
    for user in ("daemon/kernellog.py", "watch/follower.py", "commands/postmortem.py"):
        assert "kmsg_events" in _calls(ast.parse((PKG / user).read_text())), user
    classes = {
        n.name
        for p in sources()
        if layer_of(p) == "logic"
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.ClassDef)
        and any(isinstance(b, ast.Name) for b in n.bases)
        and any(isinstance(b, ast.Name) and b.id == "OomAssembler" for b in n.bases)
    }
    assert classes == set(), "one reader: no subclass of OomAssembler"


# -- one place for each piece of output ----------------------------------------------------


def test_logic_formats_no_units() -> None:
    """The policies return numbers; sizes and durations in words (``vocab.units``'
    ``format_*``) are made by the rendering layer."""
    formatting = sorted(
        f"{p.relative_to(PKG)}: {name}"
        for p in sources()
        if layer_of(p) == "logic"
        for name in _calls(ast.parse(p.read_text()))
        if name.startswith("format_")
    )
    assert formatting == [], "return numbers and format them in render/"


def priority_prefixes(tree: ast.AST) -> list[int]:
    """Lines with a string that starts with a syslog priority prefix (``"<3>..."``, or an
    f-string ``f"<{...}>..."``) written by hand."""
    specs = {id(n.format_spec) for n in ast.walk(tree) if isinstance(n, ast.FormattedValue)}
    found = []
    for n in ast.walk(tree):
        if isinstance(n, ast.JoinedStr) and id(n) not in specs and len(n.values) > 1:
            first, second = n.values[:2]
            if isinstance(first, ast.Constant) and first.value == "<":
                found += [n.lineno] if isinstance(second, ast.FormattedValue) else []
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            found += [n.lineno] if re.match(r"<[0-7]>", n.value) else []
    return found


def test_no_module_writes_a_priority_prefix_by_hand() -> None:
    """journald's ``<N>`` prefixes are made in one place, ``render.logprio.prefixed``."""
    offenders = [
        f"{p.relative_to(PKG)}:{line}"
        for p in sources()
        if p.name != "logprio.py"
        for line in priority_prefixes(ast.parse(p.read_text()))
    ]
    assert offenders == [], "use memcgctl.render.logprio.prefixed"


def test_the_prefix_checker_sees_one() -> None:
    src = 'a = "<3>kill_failed"\nb = f"<{p}>{line}"\nc = "<html>"\nd = f"x <{p}> {c:<{w}}"\n'
    assert priority_prefixes(ast.parse(src)) == [1, 2]


# -- parts, not bases that others fill -------------------------------------------------------

RECORD_BASES = {"NamedTuple", "TypedDict", "Protocol"}


def _name(node: ast.expr) -> str:
    return node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", "")


def _record_classes(trees: list[ast.AST]) -> set[str]:
    """Classes whose bare annotations are their fields (dataclasses, named tuples, typed
    dicts, protocols), and project classes built on one of them."""
    classes = [n for t in trees for n in ast.walk(t) if isinstance(n, ast.ClassDef)]
    records = {
        c.name
        for c in classes
        if any("dataclass" in ast.unparse(d) for d in c.decorator_list)
        or {_name(b) for b in c.bases} & RECORD_BASES
    }
    while True:
        more = {c.name for c in classes if {_name(b) for b in c.bases} & records} - records
        if not more:
            return records
        records |= more


def declared_for_others(tree: ast.AST, records: set[str]) -> list[str]:
    """``Class.attr`` for each attribute a class annotates without a value and does not
    assign in its own ``__init__``: a base whose attributes a subclass (often in another
    file) sets for it.  mypy makes a base declare what its methods use, so a class that
    reads attributes it does not set is found here."""
    found = []
    for c in ast.walk(tree):
        if not isinstance(c, ast.ClassDef) or c.name in records:
            continue
        bare = [
            s.target.id
            for s in c.body
            if isinstance(s, ast.AnnAssign) and s.value is None and isinstance(s.target, ast.Name)
        ]
        inits = [f for f in c.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"]
        assigned = {
            t.attr
            for f in inits
            for n in ast.walk(f)
            if isinstance(n, ast.Assign | ast.AnnAssign)
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
            if isinstance(t, ast.Attribute)
            and isinstance(t.value, ast.Name)
            and t.value.id == "self"
        }
        found += [f"{c.name}.{a}" for a in bare if a not in assigned]
    return found


def test_no_base_class_declares_attributes_others_set() -> None:
    """A class is built from parts it constructs with what they need (the daemon's
    ``RealPorts`` from a recorder, kills, knobs and watches; the ``Killer`` from its
    engines), not split across files into bases whose attributes the subclass sets."""
    parsed = {str(p.relative_to(PKG)): ast.parse(p.read_text()) for p in sources()}
    records = _record_classes(list(parsed.values()))
    found = [
        f"{rel}: {attr}"
        for rel, tree in parsed.items()
        for attr in declared_for_others(tree, records)
    ]
    assert found == [], "construct a part with what it needs instead of a base class"


def test_the_base_class_checker_sees_one() -> None:
    src = (
        "from dataclasses import dataclass\n"
        "from typing import NamedTuple, Protocol\n"
        "class Engines:\n    fs: str\n    def run(self) -> str:\n        return self.fs\n"
        "class Killer(Engines):\n    def __init__(self) -> None:\n        self.fs = 'x'\n"
        "class Part:\n    fs: str\n    def __init__(self, fs: str) -> None:\n        self.fs = fs\n"
        "@dataclass\nclass D:\n    a: int\n"
        "class T(NamedTuple):\n    a: int\n"
        "class P(Protocol):\n    a: int\n"
    )
    tree = ast.parse(src)
    assert declared_for_others(tree, _record_classes([tree])) == ["Engines.fs"]
