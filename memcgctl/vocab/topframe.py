"""What one refresh of ``memcgctl top`` shows (filled by :mod:`memcgctl.watch.topdata`,
drawn by :mod:`memcgctl.render.topview`)."""

from __future__ import annotations

from typing import Any

from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.model import CgroupInfo, ProcessInfo
from memcgctl.vocab.structs import dataclass


@dataclass(frozen=True)
class Row:
    cg: CgroupInfo
    depth: int
    valve: int | None  # memory.high the daemon holds (v2), if any
    episode: dict[str, Any] | None  # the daemon's episode in progress, if any


@dataclass(frozen=True)
class DomainVictim:
    domain: CgroupPath
    limit: int | None
    victim: ProcessInfo | None
    group: CgroupPath | None


@dataclass(frozen=True)
class Frame:
    root: CgroupPath
    policy: str
    sort: str
    rows: list[Row]
    victims: list[DomainVictim]
    kills: list[dict[str, Any]]
    daemons: int
    processes: int
