"""Beside systemd-oomd: one killer per OOM domain (docs/systemd.md).

systemd-oomd kills, for a unit with ``ManagedOOMMemoryPressure=kill``, the *candidate*
cgroup below it with the highest reclaim rate once memory pressure stays above the limit
for ``DefaultMemoryPressureDurationSec=``.  Inside a memcg the daemon holds a valve on,
that would be a second killer for one episode (the valve's throttling *is* memory
pressure, and PSI averages lag the daemon's kill by seconds), choosing against the
policy.  So the daemon takes oomd out of its domains: it sets ``user.oomd_omit=1`` on
every oomd candidate there, under its ownership mark like any knob (release puts back
what was there).

What systemd-oomd 252 honours (src/oom/oomd-util.c, ``oomd_cgroup_context_acquire``):
``user.oomd_omit`` and ``user.oomd_avoid`` on a candidate itself (never inherited from
an ancestor), and only when the candidate's directory is owned by root.  Its candidates
below a monitored cgroup (src/oom/oomd-manager.c, ``recursively_get_cgroup_context``) are
the leaves and the cgroups with ``memory.oom.group=1`` (not descended into).
"""

from __future__ import annotations

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import Vanished

OMIT = "user.oomd_omit"
OOM_GROUP = "memory.oom.group"


def _group(fs: CgroupFs, cg: CgroupPath) -> bool:
    text = fs.read(cg, OOM_GROUP)
    return text is not None and text.strip() == "1"


def candidates(fs: CgroupFs, domain: CgroupPath) -> list[CgroupPath]:
    """systemd-oomd's kill candidates inside ``domain`` (the domain itself when it is a
    leaf or an OOM group), by its rule: leaves, and ``memory.oom.group=1`` cgroups whose
    subtree it kills as a whole."""
    out: list[CgroupPath] = []
    stack = [domain]
    while stack:
        cur = stack.pop()
        try:
            if cur == domain and _group(fs, cur):
                out.append(cur)
                continue
            kids = fs.children(cur)
        except (Vanished, OSError):
            continue
        if not kids:
            out.append(cur)
            continue
        for kid in reversed(kids):
            try:
                if _group(fs, kid):
                    out.append(kid)
                else:
                    stack.append(kid)
            except (Vanished, OSError):
                continue
    return out


def honoured(fs: CgroupFs, cg: CgroupPath) -> bool:
    """systemd-oomd reads a cgroup's ``user.oomd_*`` only when root owns it."""
    try:
        return fs.owner(cg) == 0
    except (Vanished, OSError):
        return False
