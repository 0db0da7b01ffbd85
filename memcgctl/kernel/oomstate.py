"""Was a cgroup under OOM when memcgctl killed in it?  (The ``user`` kill counter counts
only kills done while handling an OOM; a kill-all of a healthy cgroup is a
``manual_kill``, counted nowhere.)

Under OOM means, for the target or any cgroup of its subtree:

* v1: ``memory.oom_control`` under_oom is set, or its oom_kill went up during the kill;
* v2: at its OOM valve or its limit — usage at or above ``memory.high`` or within
  :data:`LIMIT_SLACK` of ``memory.max`` — or ``memory.events`` high / max / oom went up
  between the sample taken before the kill and the one taken after it.

The sample before is taken once, before the first signal, so the kill is not delayed by
a second sample.
"""

from __future__ import annotations

from typing import NamedTuple

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import Vanished

# usage this close to memory.max is "at the limit" (the kernel reclaims from there)
LIMIT_SLACK = 256 * 1024
V2_PRESSURE_KEYS = ("high", "max", "oom", "oom_kill")
V1_PRESSURE_KEYS = ("oom_kill",)


class OomSample(NamedTuple):
    under_oom: bool  # at the valve, at the limit, or under_oom right now
    counters: dict[str, int]  # pressure counters summed over the subtree


def _subtree(fs: CgroupFs, top: CgroupPath) -> list[CgroupPath]:
    try:
        return list(fs.walk(top))
    except Vanished:
        return []


def sample(fs: CgroupFs, top: CgroupPath) -> OomSample:
    """The OOM state of ``top``'s subtree now."""
    counters: dict[str, int] = {}
    under = False
    if fs.version == 1:
        for cg in _subtree(fs, top):
            ctl = fs.oom_control(cg)
            under = under or bool(ctl.get("under_oom"))
            for key in V1_PRESSURE_KEYS:
                counters[key] = counters.get(key, 0) + ctl.get(key, 0)
        return OomSample(under, counters)
    events = fs.events(top)  # hierarchical: counts the whole subtree
    counters = {k: events[k] for k in V2_PRESSURE_KEYS if k in events}
    for cg in _subtree(fs, top):
        try:
            usage = fs.usage(cg)
            high, limit = fs.high(cg), fs.limit(cg)
        except Vanished:
            continue
        if usage is None:
            continue
        if (high is not None and usage >= high) or (
            limit is not None and usage + LIMIT_SLACK >= limit
        ):
            under = True
            break
    return OomSample(under, counters)


def was_under_oom(before: OomSample, after: OomSample) -> bool:
    """Under OOM at the start, or OOM pressure counted while the kill ran."""
    if before.under_oom:
        return True
    return any(after.counters.get(k, 0) > v for k, v in before.counters.items())
