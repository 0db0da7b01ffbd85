"""systemd unit names and where their cgroups live by systemd's naming convention.

systemd puts a unit's cgroup below its slice, and a slice's path spells its name out:
``a-b.slice`` is ``/a.slice/a-b.slice``, ``-.slice`` is the root, so a service in
``a-b.slice`` lives at ``/a.slice/a-b.slice/UNIT`` (systemd.slice(5)).  Services without
a ``Slice=`` go to ``system.slice``.  Pure: the caller asks systemd (when it runs) or
looks the candidates up in the hierarchy.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import UsageProblem

UNIT_TYPES = (
    "service",
    "scope",
    "slice",
    "socket",
    "mount",
    "swap",
    "device",
    "target",
    "timer",
    "path",
    "automount",
)
# the characters systemd allows in a unit name (unit_name_is_valid), at most 255
_NAME = re.compile(r"[A-Za-z0-9:_.\\@-]{1,255}", re.ASCII)
DEFAULT_SLICE = "system.slice"


def unit_name(text: str) -> str:
    """A unit name as systemctl takes it: without a type, ``.service`` is meant."""
    name = text
    if "." not in name or name.rsplit(".", 1)[1] not in UNIT_TYPES:
        name += ".service"
    if not _NAME.fullmatch(name) or name.startswith("."):
        raise UsageProblem(f"{text!r}: not a systemd unit name")
    return name


def slice_path(name: str) -> CgroupPath:
    """The cgroup of slice ``name``: ``a-b.slice`` → ``/a.slice/a-b.slice``."""
    if not name.endswith(".slice"):
        raise UsageProblem(f"{name}: not a slice")
    stem = name[: -len(".slice")]
    if stem == "-":
        return ROOT
    parts = stem.split("-")
    if not stem or "" in parts:
        raise UsageProblem(f"{name}: not a valid slice name (empty component)")
    return CgroupPath("/".join("-".join(parts[:i]) + ".slice" for i in range(1, len(parts) + 1)))


def follows_convention(cg: CgroupPath) -> bool:
    """True when every ancestor of ``cg`` is the slice its path says it is."""
    up = cg.parent
    while up is not None and not up.is_root:
        try:
            if not up.name.endswith(".slice") or slice_path(up.name) != up:
                return False
        except UsageProblem:
            return False
        up = up.parent
    return True


def convention_cgroup(unit: str, cgroups: Iterable[CgroupPath]) -> list[CgroupPath]:
    """Where ``unit``'s cgroup may be, without systemd to ask: a slice by its name;
    another unit in system.slice, else wherever a cgroup of that name sits below slices
    named by the convention (every match, for the caller to judge)."""
    if unit.endswith(".slice"):
        return [slice_path(unit)]
    default = slice_path(DEFAULT_SLICE).child(unit)
    found = [cg for cg in cgroups if cg.name == unit and follows_convention(cg)]
    return [default] if default in found else sorted(found)
