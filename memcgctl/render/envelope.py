"""What every document about cgroups says about the hierarchy it read (standard library
only: kill-all's import path stays short)."""

from __future__ import annotations

from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def hierarchy_json(mount: Path, version: int) -> dict[str, Any]:
    """Which cgroup hierarchy a document describes (tree, ps, kill-all)."""
    return {"mount": str(mount), "version": version}
