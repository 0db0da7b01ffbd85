"""The daemon's protocol words are enums, so that ``mypy --strict`` (the project's
check, pyproject.toml) refuses a misspelt mode, level or wake-up where a string was
once accepted, and accepts the right ones.  The values still print as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memcgctl.daemon.protocol import KERNEL_LOG, Feed, Managed, Mode, Reading, Wake
from memcgctl.daemon.valve import OomLevel
from memcgctl.vocab.cgpath import CgroupPath

api = pytest.importorskip("mypy.api")

SNIPPET = """\
from memcgctl.daemon.core import Watch
from memcgctl.daemon.protocol import Managed, Mode, Reading, Wake
from memcgctl.daemon.valve import OomLevel
from memcgctl.vocab.cgpath import CgroupPath


def taken() -> Managed:
    return Managed({mode}, CgroupPath("/x"))


def looked() -> Reading:
    return Reading({level})


def held(w: Watch) -> bool:
    return w.mode == {mode}


def woke(what: Wake) -> bool:
    return what == {wake}
"""


def mypy_errors(tmp_path: Path, **words: str) -> list[str]:
    src = tmp_path / "snippet.py"
    src.write_text(SNIPPET.format(**words))
    out, _, _ = api.run(
        ["--strict", "--python-version", "3.10", "--cache-dir", str(tmp_path / "cache"), str(src)]
    )
    return [line for line in out.splitlines() if ": error:" in line]


def test_mypy_refuses_misspelt_protocol_words(tmp_path: Path) -> None:
    errors = mypy_errors(tmp_path, mode='"vlave"', level='"shrot"', wake='"fired"')
    lines = {int(e.split(":")[1]) for e in errors}
    assert len(errors) == 4 and lines == {8, 12, 16, 20}, errors  # every misspelt word
    assert 'expected "Mode"' in errors[0] and 'expected "OomLevel"' in errors[1], errors
    assert all("Non-overlapping equality check" in e for e in errors[2:]), errors


def test_mypy_accepts_the_enums(tmp_path: Path) -> None:
    words = {"mode": "Mode.VALVE", "level": "OomLevel.SHORT", "wake": "Wake.FIRED"}
    assert mypy_errors(tmp_path, **words) == []


def test_the_values_print_as_the_strings_they_replaced() -> None:
    assert [m.value for m in Mode] == ["oom", "valve", "host"]
    assert [v.value for v in OomLevel] == ["clear", "recovered", "short", "critical"]
    assert [w.value for w in Wake] == ["fired", "quiet", "gone"]
    assert isinstance(KERNEL_LOG, Feed) and not isinstance(KERNEL_LOG, str)
    m = Managed(Mode.HOST, CgroupPath("/"))
    assert json.dumps({"mode": m.mode.value}) == '{"mode": "host"}'
    assert Reading(OomLevel.CLEAR).poll is None
