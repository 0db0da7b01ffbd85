"""``explain-kill``'s counterfactual input: a :class:`~memcgctl.vocab.model.Snapshot` built
from an OOM report's task table, with the badness the caller knows (a ``--badness`` file,
:class:`BadnessMap`, or what this machine still knows, :class:`LiveInfo`); pure, no I/O.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from types import MappingProxyType

from memcgctl.logic.oomreport import OomReport
from memcgctl.logic.oomscore import row_process
from memcgctl.logic.oomtable import TaskRow
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.constants import BADNESS_DEFAULT, fallback_badness
from memcgctl.vocab.model import CgroupInfo, ProcessInfo, Snapshot
from memcgctl.vocab.reportnotes import ReportNote, Said, note
from memcgctl.vocab.structs import dataclass

# -- the badness the caller knows ------------------------------------------------------


class BadnessMap:
    """``--badness FILE``: one ``PATTERN BADNESS`` a line (``#`` comments).  A pattern
    starting with ``/`` is a cgroup path (shell wildcards allowed), anything else a
    process name (comm) pattern; the first match wins."""

    def __init__(self, entries: list[tuple[str, int]] | None = None) -> None:
        self.entries = entries or []

    @classmethod
    def parse(cls, text: str, name: str = "badness file") -> BadnessMap:
        from memcgctl.vocab.errors import UsageProblem

        entries: list[tuple[str, int]] = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            pattern, _, value = line.rpartition(" ")
            pattern = pattern.strip()
            if not pattern or not value.isascii() or not value.isdigit() or int(value) > 1000:
                raise UsageProblem(
                    f"{name}:{n}: want 'PATTERN BADNESS' (BADNESS 0-1000), got {line!r}"
                )
            entries.append((pattern, int(value)))
        return cls(entries)

    def cgroup(self, path: str) -> int | None:
        for pattern, value in self.entries:
            if pattern.startswith("/") and fnmatch.fnmatchcase(path, pattern):
                return value
        return None

    def comm(self, comm: str) -> int | None:
        for pattern, value in self.entries:
            if not pattern.startswith("/") and fnmatch.fnmatchcase(comm, pattern):
                return value
        return None


@dataclass(frozen=True)
class LiveInfo:
    """What this machine still knows about a process or cgroup of the report."""

    cgroup: CgroupPath | None = None
    badness: int | None = None
    source: str = "default"
    pod: str | None = None  # a cgroup's pod label ("namespace/name"), read beside its badness


LiveLookup = Callable[[TaskRow], LiveInfo | None]
CgroupLookup = Callable[[CgroupPath], LiveInfo | None]


def _chain(path: CgroupPath, root: CgroupPath) -> list[CgroupPath]:
    """``root`` and every cgroup between it and ``path`` (inclusive)."""
    out = [root]
    if path == root or not root.contains(path):
        return out
    cur = root
    for part in path.parts[root.depth :]:
        cur = cur.child(part)
        out.append(cur)
    return out


def _pod_above(path: CgroupPath, live_cgroup: CgroupLookup | None) -> str | None:
    """The pod label of the nearest ancestor of ``path`` that still carries one (the
    OOM root of a container's memcg OOM is inside its pod's cgroup)."""
    up = path.parent
    while up is not None and live_cgroup is not None:
        info = live_cgroup(up)
        if info is not None and info.pod is not None:
            return info.pod
        up = up.parent
    return None


def build_snapshot(
    report: OomReport,
    root: CgroupPath,
    placement: dict[int, CgroupPath],
    badness: BadnessMap,
    live: LiveLookup | None,
    live_cgroup: CgroupLookup | None,
) -> tuple[Snapshot, list[ReportNote]]:
    notes: list[ReportNote] = []
    processes: dict[int, ProcessInfo] = {}
    paths: set[CgroupPath] = {root}
    for row in report.tasks:
        if row.pid in processes:
            continue
        cg = placement.get(row.pid, root)
        value = badness.comm(row.name)
        source = "process"
        if value is None and live is not None:
            info = live(row)
            if info is not None:
                if info.cgroup is not None:
                    cg = info.cgroup
                if info.badness is not None:
                    value, source = info.badness, info.source
        if value is None:
            value, source = fallback_badness(row.oom_score_adj)
        if not root.contains(cg):
            cg = root
        paths.update(_chain(cg, root))
        processes[row.pid] = row_process(row, cg, value, source)
    children: dict[CgroupPath, list[CgroupPath]] = {p: [] for p in paths}
    for p in sorted(paths):
        if p == root:
            continue
        children.setdefault(p.parent or ROOT, []).append(p)
    pids: dict[CgroupPath, list[int]] = {p: [] for p in paths}
    for proc in processes.values():
        pids.setdefault(proc.cgroup, []).append(proc.pid)
    cgroups: dict[CgroupPath, CgroupInfo] = {}
    for p in sorted(paths):  # a parent sorts before its children
        value = badness.cgroup(p)
        source = "file"
        info = live_cgroup(p) if live_cgroup is not None else None
        if value is None and info is not None and info.badness is not None:
            value, source = info.badness, info.source
        pod = info.pod if info is not None else None
        if pod is None:  # it belongs to the pod its parent belongs to
            parent = cgroups.get(p.parent) if p != root and p.parent is not None else None
            pod = parent.pod if parent is not None else _pod_above(p, live_cgroup)
        if value is None:
            value, source = BADNESS_DEFAULT, "default"
        usage = sum(
            (processes[pid].rss_anon_kb + processes[pid].rss_shmem_kb + processes[pid].swap_kb)
            * 1024
            for q in paths
            if p.contains(q)
            for pid in pids.get(q, [])
        )
        limit = None
        if p == root and report.memcg.get("memory"):
            limit = report.memcg["memory"]["limit_kb"] * 1024
        cgroups[p] = CgroupInfo(
            path=p,
            usage_bytes=usage,
            limit_bytes=limit,
            badness=value,
            badness_source=source,
            oom_delay_ms=None,
            oom_delay_source="default",
            oom_group=(report.group is not None and p == report.group) or None,
            under_oom=None,
            oom_kill_disable=None,
            pids=tuple(sorted(pids.get(p, []))),
            children=tuple(children.get(p, [])),
            events=MappingProxyType({}),
            pod=pod,
        )
    if len(paths) > 1 or report.tasks:
        notes.append(note(Said.VICTIM_MEMCG_ONLY, root=root))
    return Snapshot(1, root, MappingProxyType(cgroups), MappingProxyType(processes)), notes
