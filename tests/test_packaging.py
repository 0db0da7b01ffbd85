"""Packaging: the data files (man page, completions, systemd unit) a regular install puts
under the prefix exist and go into the sdist.  (Editable installs carry none: docs/install.md.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def data_files() -> list[str]:
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.data-files]", 1)[1].split("\n[", 1)[0]
    return [
        f
        for files in re.findall(r"=\s*\[([^\]]*)\]", section)
        for f in re.findall(r'"([^"]+)"', files)
    ]


def test_data_files_exist_and_are_in_the_sdist() -> None:
    files = data_files()
    assert "man/memcgctl.1" in files and "completions/memcgctl.fish" in files
    manifest = (ROOT / "MANIFEST.in").read_text().split()
    for name in files:
        assert (ROOT / name).is_file(), name
        assert name in manifest, f"{name} is not in MANIFEST.in"


def test_no_runtime_dependency_on_psutil() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "psutil" not in deps
