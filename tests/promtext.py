"""Validate Prometheus text exposition output (format 0.0.4).

A strict hand check always runs (HELP and TYPE before each family's samples, families
contiguous and declared once, counters named ``*_total``, label values escaped, no
duplicate series, numeric values); when ``prometheus_client`` is installed (the
``test`` extra) its parser must accept the text too and agree on every sample.
"""

from __future__ import annotations

import math
import re

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_LABELS = (
    rf"\{{(?:[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE}(?:,[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE})*)?\}}"
)
_SAMPLE = re.compile(rf"^({_NAME})({_LABELS})? (\S+)$")
_PAIR = re.compile(rf"([a-zA-Z_][a-zA-Z0-9_]*)=({_LABEL_VALUE})")

Families = dict[str, dict[tuple[str, ...], float]]


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value[1:-1])


def _family_of(sample: str, kind: str) -> str:
    if kind == "counter" and sample.endswith("_total"):
        return sample[: -len("_total")]
    return sample


def parse_exposition(text: str) -> Families:
    """{family: {label values in order: value}}; AssertionError on anything off."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    helps: dict[str, str] = {}
    types: dict[str, str] = {}
    out: Families = {}
    current: str | None = None
    closed: set[str] = set()
    for line in text.splitlines():
        assert line.strip(), "no blank lines"
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert re.fullmatch(_NAME, name) and help_text, line
            assert name not in helps, f"HELP twice for {name}"
            helps[name] = help_text
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert kind in ("counter", "gauge"), line
            assert name in helps and name not in types, f"TYPE for {name}: HELP first, once"
            assert (kind == "counter") == name.endswith("_total"), f"{name}: counter ⇔ _total"
            types[name] = kind
            continue
        assert not line.startswith("#"), f"unexpected comment {line!r}"
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        assert name in types, f"{name}: sample before its TYPE"
        if current != name:
            assert name not in closed, f"{name}: samples not contiguous"
            if current is not None:
                closed.add(current)
            current = name
        number = float(value)
        assert math.isfinite(number)
        if types[name] == "counter":
            assert number >= 0 and number == int(number), line
        key = tuple(_unescape(v) for _, v in _PAIR.findall(labels))
        family = out.setdefault(_family_of(name, types[name]), {})
        assert key not in family, f"duplicate series {line!r}"
        family[key] = number
    _check_with_client(text, out)
    return out


def _check_with_client(text: str, expected: Families) -> None:
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        return
    got: Families = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            got.setdefault(fam.name, {})[tuple(s.labels.values())] = s.value
    assert got == expected, f"prometheus_client parsed {got}, the hand check {expected}"
