"""Real third-party data (saved OOM logs, kubelet pod lists) read at run time.

The files live outside the project, in ``shared/data`` beside the repository (CI puts a
copy of shared/ beside the clone); the project never copies them.  Their sources and
licences: ``shared/data/SOURCES.tsv`` and ``oom-logs/excerpts/MANIFEST.tsv``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data"


def data_dir(sub: str) -> Path:
    """``shared/data/SUB``, or skip the test with the reason."""
    path = DATA / sub
    if not path.is_dir():
        pytest.skip(f"real third-party data not found at {path} (shared/data beside the clone)")
    return path


def data_file(rel: str) -> Path:
    path = DATA / rel
    if not path.is_file():
        pytest.skip(f"real third-party file not found: {path}")
    return path
