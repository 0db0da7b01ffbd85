"""History one user cannot erase: the journal's oldest file is shared fairly per owner.

The journal rotates ``journal.jsonl`` → ``journal.jsonl.1`` when it passes its size
cap.  Before, the older ``.1`` was dropped whole, so a user who OOMs its own cgroups in
a loop pushed everyone's records out within seconds.  Now the records leaving ``.1``
are merged into ``journal.jsonl.2``, which keeps at most the cap, **split equally among
owners**: the owner of a record is the uid owning its cgroup's directory (or, once the
cgroup is gone, its nearest existing ancestor's; a delegated user cannot remove the root
of its own delegation, so its records stay its own).  An owner that needs less than an
equal share leaves the rest to the others (max-min fairness); each owner keeps its
newest records.  So a flood from one owner only ever evicts that owner's history.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable

from memcgctl.vocab.cgpath import CgroupPath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from memcgctl.vocab.records import Event

OwnerOf = Callable[[str], Hashable]


def cgroup_owner(path_of: Callable[[CgroupPath], str]) -> OwnerOf:
    """The owner of a record's cgroup: the uid of its directory, or of its nearest
    existing ancestor (``path_of`` maps a cgroup to its directory under the mount).
    A name that is not a cgroup path is its own owner (a string key)."""
    cache: dict[str, Hashable] = {}

    def owner(name: str) -> Hashable:
        if name in cache:
            return cache[name]
        found: Hashable = f"name:{name}"
        try:
            cg: CgroupPath | None = CgroupPath(name) if name.startswith("/") else None
        except ValueError:
            cg = None
        missing: list[str] = []  # gone (or too long a path): their ancestor's owner
        while cg is not None:
            if cg in cache:
                found = cache[cg]
                break
            try:
                found = os.lstat(path_of(cg)).st_uid
                missing.append(cg)
                break
            except OSError:
                missing.append(cg)
                cg = cg.parent
        if len(cache) < 100_000:  # every directory looked at once per rotation
            cache.update(dict.fromkeys(missing, found))
            cache[name] = found
        return found

    return owner


def per_cgroup(cg: str) -> Hashable:
    """Without the cgroup mount: each cgroup is its own owner."""
    return cg


def fair_share(
    records: list[Event], lines: list[bytes], budget: int, owner_of: OwnerOf
) -> list[bytes]:
    """The lines to keep (in their order) within ``budget`` bytes: equal shares per
    owner, the unused part of a share going to the others; newest records first."""
    groups: dict[Hashable, list[int]] = {}
    for i, rec in enumerate(records):
        groups.setdefault(owner_of(str(rec.get("cgroup", ""))), []).append(i)
    sizes = {k: sum(len(lines[i]) + 1 for i in idx) for k, idx in groups.items()}
    left, allot = budget, {}
    for n, key in enumerate(sorted(groups, key=lambda k: sizes[k])):
        share = left // (len(groups) - n)
        allot[key] = min(sizes[key], share)
        left -= allot[key]
    keep: set[int] = set()
    for key, idx in groups.items():
        room = allot[key]
        for i in reversed(idx):  # newest first
            need = len(lines[i]) + 1
            if need > room:
                break
            room -= need
            keep.add(i)
    return [lines[i] for i in sorted(keep)]
