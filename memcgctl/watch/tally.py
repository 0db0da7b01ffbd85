"""The kill counters document of ``counters``: the kernel's counters, and kills by cause
from the running totals (``state/totals``) kept up to date with the kernel log's
history.  Reads the kernel log only after the cursor (the last journaled kill), and
attributes kills whose report the kernel rate-limited from the per-cgroup counters.

The kernel's own counters: v1 ``memory.oom_control`` (``oom_kill``, local to the memcg;
the hierarchical count is summed over the subtree), v2 ``memory.events`` (hierarchical)
and ``memory.events.local``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from memcgctl.env import Env
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.logic.counters import (
    by_cause,
    by_cause_many,
    entry,
    pick_kernel_counters,
    subtree_sums,
)
from memcgctl.state import totals as tot
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import MemcgctlError, Vanished
from memcgctl.watch.history import KillRecorder, kernel_history


def counters_document(env: Env, cgs: list[CgroupPath], walked: bool = False) -> dict[str, Any]:
    """``{system, counting_since, cgroups: [...]}`` for the cgroups ``cgs``; ``walked``:
    ``cgs`` is a whole pre-order walk (every cgroup below the first), not walked again."""
    recorder = KillRecorder(env)
    journal = recorder.journal
    boot_id = env.proc.boot_id()
    boot_time = env.proc.boot_time()
    journal.boot_id = boot_id
    # the running totals (memcgctl.state.totals): a new epoch at a new boot
    totals: dict[str, Any] | None = None
    try:
        totals = journal.totals(boot_id, boot_time)
    except MemcgctlError as exc:
        recorder.warn(exc)
    # kills up to the cursor are in the journal already: parse only what came after
    cursor = journal.read_cursor(boot_id)
    if (
        cursor is not None
        and totals is not None
        and not tot.kmsg_seq_known(totals, boot_id, cursor)
    ):
        # the cursor is written as the seq of a journaled kill: one that names none is
        # not ours, and trusting it could hide kernel kills
        journal.discard_cursor(f"seq {cursor} names no journaled kill")
        cursor = None
    reader, _, kernel = kernel_history(
        env, recorder, after_seq=cursor if totals is not None else None, follower_needed=False
    )
    if reader is not None:
        reader.close()
        last = max((int(ev["seq"]) for ev in kernel if ev.get("kind") == "oom_kill"), default=None)
        if last is not None and not recorder.warned:
            with contextlib.suppress(MemcgctlError):
                journal.write_cursor(boot_id, last)
    host_kills = env.proc.vmstat().get("oom_kill", 0)
    since: float | None = None
    if totals is not None and not recorder.warned:
        with contextlib.suppress(MemcgctlError):
            totals = journal.totals(boot_id, boot_time)  # with what was just appended
            # kills whose report the kernel rate-limited: find their cgroups, unless
            # neither the journal nor the kernel's kill count moved since the last try
            attempt = [totals["records"], host_kills]
            if totals["unattributed"] and totals.get("attempt") != attempt:
                totals = journal.attribute(local_kills(env.fs), attempt)
        since = float(totals["created"])
        causes = by_cause_many(cgs, totals["kills"], totals["unattributed_by_cause"])
    else:
        # the state directory cannot be written: recount what the log and journal hold
        from memcgctl.logic.events import merge_history
        from memcgctl.logic.kmsgparse import usec_to_iso

        boot_iso = usec_to_iso(0, boot_time)
        kills = [
            ev
            for ev in merge_history(kernel, journal.read())
            if ev.get("kind") in ("oom_kill", "user_kill") and str(ev.get("time", "")) >= boot_iso
        ]
        causes = {cg: by_cause(cg, kills) for cg in cgs}
    local, hier = kernel_counters(env.fs, cgs, walked)
    doc: dict[str, Any] = {
        "system": {"oom_kill": host_kills},
        "counting_since": since,
        "cgroups": [entry(cg, local.get(cg), hier.get(cg), causes[cg]) for cg in cgs],
    }
    return doc


def kernel_counters(
    fs: CgroupFs, cgs: list[CgroupPath], walked: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(local, hierarchical) kernel counters per cgroup (None where the kernel has none);
    ``walked``: see :func:`counters_document`."""
    local: dict[str, Any] = {}
    hier: dict[str, Any] = {}
    if fs.version == 1:
        # one walk from each topmost cgroup asked for (not one per cgroup: a walk per
        # cgroup of a deep chain is quadratic), sums from the leaves up in one pass
        seen: dict[str, dict[str, int]] = {}
        order: list[CgroupPath] = []
        walks: list[Iterable[CgroupPath]] = (
            [cgs] if walked else [fs.walk(top) for top in _topmost(cgs)]
        )
        for walk in walks:
            for sub in walk:
                try:
                    seen[sub] = pick_kernel_counters(fs.oom_control(sub))
                except Vanished:
                    continue
                order.append(sub)
        sums = subtree_sums(order, seen)
        for cg in cgs:
            local[cg] = seen.get(cg)
            hier[cg] = sums.get(cg, {}) if cg in seen else None
        return local, hier
    for cg in cgs:
        try:
            loc = pick_kernel_counters(fs.events(cg, local=True))
            h = pick_kernel_counters(fs.events(cg))
        except Vanished:
            loc, h = {}, {}
        local[cg] = loc or None
        hier[cg] = h or None
    return local, hier


def _topmost(cgs: list[CgroupPath]) -> list[CgroupPath]:
    """The cgroups of ``cgs`` that no other one of them contains."""
    if any(cg.is_root for cg in cgs):
        return [CgroupPath("/")]
    out: list[CgroupPath] = []
    # sorted by "path/", a cgroup's descendants follow it at once ("/a/", "/a/b/", "/a-x/"
    # would not be in that order sorted by path alone): one comparison each
    for cg in sorted(set(cgs), key=lambda c: c + "/"):
        if not out or not (cg + "/").startswith(out[-1] + "/"):
            out.append(cg)
    return out


def local_kills(fs: CgroupFs) -> dict[str, int]:
    """The kernel's local oom_kill counter of every memory cgroup (v1
    memory.oom_control, v2 memory.events.local; cgroups without one left out)."""
    out: dict[str, int] = {}
    for cg in fs.walk():
        try:
            values = fs.oom_control(cg) if fs.version == 1 else fs.events(cg, local=True)
        except (Vanished, OSError):
            continue
        if "oom_kill" in values:
            out[cg] = values["oom_kill"]
    return out
