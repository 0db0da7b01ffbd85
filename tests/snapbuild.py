"""Build :class:`~memcgctl.vocab.model.Snapshot` objects directly, for policy unit tests.

``build({"/a": dict(badness=100, usage=10), ...}, [P(10, "/a", rss=5), ...])`` — parents
are created implicitly; children are ordered by creation (``ino``) = the dict order.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.model import BADNESS_DEFAULT, BADNESS_NEVER, CgroupInfo, ProcessInfo, Snapshot


@dataclass
class P:
    pid: int
    cgroup: str
    rss: int = 0  # kB, anon
    badness: int | None = None
    adj: int = 0
    killable: bool = True
    file: int = 0
    shmem: int = 0
    swap: int = 0
    pte: int = 0
    comm: str = ""

    def info(self) -> ProcessInfo:
        if self.badness is not None:
            badness, source = self.badness, "process"
        elif self.adj == -1000:
            badness, source = BADNESS_NEVER, "oom_score_adj"
        else:
            badness, source = BADNESS_DEFAULT, "default"
        return ProcessInfo(
            pid=self.pid,
            comm=self.comm or f"p{self.pid}",
            cgroup=CgroupPath(self.cgroup),
            uid=0,
            rss_anon_kb=self.rss,
            rss_file_kb=self.file,
            rss_shmem_kb=self.shmem,
            swap_kb=self.swap,
            pgtables_kb=self.pte,
            oom_score_adj=self.adj,
            badness=badness,
            badness_source=source,
            killable=self.killable and self.pid != 1,
        )


def build(
    cgroups: dict[str, dict[str, Any]],
    procs: list[P],
    version: int = 2,
    mem_total_kb: int = 16 << 20,
    swap_total_kb: int = 0,
) -> Snapshot:
    spec: dict[CgroupPath, dict[str, Any]] = {ROOT: {}}
    for name, attrs in cgroups.items():
        path = CgroupPath(name)
        for anc in reversed(path.ancestors()):
            spec.setdefault(anc, {})
        spec[path] = attrs
    order = list(spec)
    children: dict[CgroupPath, list[CgroupPath]] = {p: [] for p in spec}
    for path in order:
        if path.parent is not None:
            children[path.parent].append(path)
    pids: dict[CgroupPath, list[int]] = {p: [] for p in spec}
    for pr in procs:
        pids[CgroupPath(pr.cgroup)].append(pr.pid)
    infos = {}
    for ino, path in enumerate(order, start=100):
        a = spec[path]
        badness = a.get("badness")
        infos[path] = CgroupInfo(
            path=path,
            usage_bytes=a.get("usage", 0),
            limit_bytes=a.get("limit"),
            badness=BADNESS_DEFAULT if badness is None else badness,
            # "source": "user" for a delegated user's value (default: trusted)
            badness_source="default" if badness is None else a.get("source", "trusted"),
            oom_delay_ms=None,
            oom_delay_source="default",
            oom_group=a.get("oom_group", False if version == 2 else None),
            under_oom=None,
            oom_kill_disable=None,
            pids=tuple(sorted(pids[path])),
            # snapshot children come sorted by name, like the reader's
            children=tuple(sorted(children[path])),
            swap_limit_bytes=a.get("swap_limit"),
            swappiness=a.get("swappiness", 60 if version == 1 else None),
            ino=a.get("ino", ino),
        )
    return Snapshot(
        version=version,
        root=ROOT,
        cgroups=MappingProxyType(infos),
        processes=MappingProxyType({p.pid: p.info() for p in procs}),
        mem_total_kb=mem_total_kb,
        swap_total_kb=swap_total_kb,
        page_size=4096,
    )
