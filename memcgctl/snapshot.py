"""Fill an immutable :class:`~memcgctl.vocab.model.Snapshot` from the kernel files.

Cgroups or processes that vanish while we read are left out, never an error.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.procfs import ProcFs
from memcgctl.logic.rules import ProcessFacts, RuleSet
from memcgctl.state.store import (
    BADNESS,
    OOM_DELAY,
    RULE_MARKS,
    Entry,
    Key,
    ProcessRegistry,
    pod_beside,
    read_setting,
)
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.constants import fallback_badness
from memcgctl.vocab.errors import Vanished
from memcgctl.vocab.model import (
    BADNESS_DEFAULT,
    CgroupInfo,
    KernelParams,
    ProcessInfo,
    Snapshot,
)


def read_cgroup(fs: CgroupFs, cg: CgroupPath, parent_pod: str | None = None) -> CgroupInfo:
    """Raises Vanished if the cgroup disappears meanwhile.  ``parent_pod``: the pod the
    parent belongs to, which ``cg`` belongs to too unless it carries a label itself."""
    badness = read_setting(fs, cg, BADNESS)
    pod = pod_beside(fs, cg, badness) or parent_pod
    delay = read_setting(fs, cg, OOM_DELAY)
    if fs.version == 1:
        control = fs.oom_control(cg)
        events = MappingProxyType(dict(control))
        events_local = MappingProxyType(
            {"oom_kill": control["oom_kill"]} if "oom_kill" in control else {}
        )
        under_oom: bool | None = bool(control.get("under_oom", 0)) if control else None
        kill_disable: bool | None = bool(control.get("oom_kill_disable", 0)) if control else None
    else:
        events = MappingProxyType(fs.events(cg))
        events_local = MappingProxyType(fs.events(cg, local=True))
        under_oom = kill_disable = None
    return CgroupInfo(
        path=cg,
        usage_bytes=fs.usage(cg),
        limit_bytes=fs.limit(cg),
        badness=badness.value if badness.value is not None else BADNESS_DEFAULT,
        badness_source=badness.source,
        oom_delay_ms=delay.value,
        oom_delay_source=delay.source,
        oom_group=fs.oom_group(cg),
        under_oom=under_oom,
        oom_kill_disable=kill_disable,
        pids=tuple(fs.procs(cg)),
        children=tuple(fs.children(cg)),
        swap_limit_bytes=fs.swap_limit(cg),
        swappiness=fs.swappiness(cg),
        events=events,
        events_local=events_local,
        ino=fs.inode(cg),
        pod=pod,
        badness_rule=badness_rule(fs, cg) if badness.source == "trusted" else None,
    )


def badness_rule(fs: CgroupFs, cg: CgroupPath) -> str | None:
    """The name of the rule that wrote cg's trusted badness (None: set by hand)."""
    raw = fs.get_xattr(cg, f"trusted.{RULE_MARKS[BADNESS]}")
    return raw[:128].decode("utf-8", "replace") if raw else None


def _pod_above(fs: CgroupFs, cg: CgroupPath) -> str | None:
    """The pod label on the nearest ancestor of the snapshot's root (a root inside a
    pod, e.g. a container's cgroup, still belongs to that pod)."""
    up = cg.parent
    while up is not None:
        try:
            pod = pod_beside(fs, up, read_setting(fs, up, BADNESS))
        except (Vanished, OSError):
            return None
        if pod is not None:
            return pod
        up = up.parent
    return None


class BadnessResolver:
    """Where one process's badness comes from, in order of precedence:

    1. ``process``: its own registry entry (pid and start time match);
    2. ``rule``: the first process rule that matches it (``badness_from``: the rule);
    3. ``inherited``: the entry of its nearest registered ancestor by the ppid chain
       (``badness_from``: that pid), when it was forked after that entry was set.
       Each link is checked by start time: a parent is never younger than its child,
       so a recycled pid breaks the chain instead of passing a priority on; init's
       entry never passes on;
    4. ``oom_score_adj``: -1000 counts as 1000;
    5. ``default``: 500.

    Built once per snapshot; the parent links it reads are cached, and with no
    registry entries and no process rules it reads nothing beyond the caller's."""

    def __init__(
        self,
        proc: ProcFs,
        entries: Mapping[Key, Entry],
        rules: RuleSet | None = None,
    ) -> None:
        self.proc = proc
        self.entries = entries
        self.pids = frozenset(pid for pid, _ in entries)
        self.rules = rules if rules is not None and rules.process_rules else None
        self.trivial = not self.pids and self.rules is None
        self._links: dict[int, tuple[int, int] | None] = {}
        self._family: frozenset[int] | None = None
        self._family_known = False

    def family(self) -> frozenset[int] | None:
        """Every descendant of a live registered process, found from the registered
        processes down (``/proc/PID/task/*/children``): the only processes that can
        inherit, so nobody else pays for a walk up its ppid chain.  None where the
        kernel has no children files (every process then walks its chain).  A process
        forked after this is read counts from the next snapshot on."""
        if self._family_known:
            return self._family
        self._family_known = True
        found: set[int] = set()
        todo = [pid for pid in self.pids if pid > 1 and self.own(pid) is not None]
        try:
            while todo:
                pid = todo.pop()
                try:
                    kids = self.proc.children(pid)
                except Vanished:
                    continue
                for kid in kids:
                    if kid not in found:
                        found.add(kid)
                        todo.append(kid)
        except NotImplementedError:
            return None
        self._family = frozenset(found)
        return self._family

    def _link(self, pid: int) -> tuple[int, int] | None:
        if pid not in self._links:
            try:
                self._links[pid] = self.proc.ppid_and_start(pid)
            except (Vanished, ValueError, IndexError, OSError):
                self._links[pid] = None
        return self._links[pid]

    def own(self, pid: int) -> int | None:
        if pid not in self.pids:
            return None
        link = self._link(pid)
        entry = self.entries.get((pid, link[1])) if link is not None else None
        return entry.badness if entry is not None else None

    def inherited(self, pid: int) -> tuple[int, int] | None:
        """(badness, ancestor pid) or None."""
        family = self.family()
        if family is not None and pid not in family:
            return None
        link = self._link(pid)
        if link is None:
            return None
        born = younger = link[1]
        parent = link[0]
        while parent > 1:
            up = self._link(parent)
            if up is None or up[1] > younger:  # gone, or a recycled pid: no parent of ours
                return None
            if parent in self.pids:
                entry = self.entries.get((parent, up[1]))
                if entry is not None and entry.set_at is not None and born >= entry.set_at:
                    return entry.badness, parent
            younger, parent = up[1], up[0]
        return None

    def resolve(
        self, pid: int, comm: str, uid: int, cgroup: CgroupPath, oom_score_adj: int
    ) -> tuple[int, str, int | str | None]:
        """(badness, source, from): ``from`` is the rule's name or the ancestor's pid."""
        if not self.trivial:
            own = self.own(pid)
            if own is not None:
                return own, "process", None
            if self.rules is not None:
                proc = self.proc
                facts = ProcessFacts(
                    comm, uid, cgroup, lambda: proc.exe(pid), lambda: proc.cmdline(pid)
                )
                rule = self.rules.for_process(facts)
                if rule is not None and rule.badness is not None:
                    return rule.badness, "rule", rule.name
            if self.pids:
                found = self.inherited(pid)
                if found is not None:
                    return found[0], "inherited", found[1]
        badness, source = fallback_badness(oom_score_adj)
        return badness, source, None

    def resolve_pid(self, pid: int, cgroup: CgroupPath) -> tuple[int, str, int | str | None]:
        """The same for one process read on its own (``get-badness --pid``)."""
        st, adj, _ = self.proc.status_and_adj(pid)
        return self.resolve(pid, st.name, st.uid, cgroup, adj)


def read_process(
    proc: ProcFs,
    pid: int,
    cgroup: CgroupPath,
    resolver: BadnessResolver,
    with_oom_score: bool = False,
) -> ProcessInfo:
    """Raises Vanished if the process exits meanwhile."""
    st, adj, score = proc.status_and_adj(pid, with_oom_score)
    origin: int | str | None = None
    if not resolver.trivial:
        badness, source, origin = resolver.resolve(pid, st.name, st.uid, cgroup, adj)
    else:
        badness, source = fallback_badness(adj)
    # positional: this runs for every process on the host (bench/predict_bench.py)
    return ProcessInfo(
        pid,
        st.name,
        cgroup,
        st.uid,
        st.rss_anon_kb,
        st.rss_file_kb,
        st.rss_shmem_kb,
        st.swap_kb,
        st.pgtables_kb,
        adj,
        badness,
        source,
        st.has_mm and not st.kthread and pid != 1,
        score,
        origin,
    )


def take_snapshot(
    fs: CgroupFs,
    proc: ProcFs,
    registry: ProcessRegistry | None,
    root: CgroupPath = ROOT,
    with_processes: bool = True,
    with_oom_score: bool = False,
    rules: RuleSet | None = None,
) -> Snapshot:
    cgroups: dict[CgroupPath, CgroupInfo] = {}
    for cg in fs.walk(root):  # pre-order: a parent is read before its children
        if cg == root:
            above = _pod_above(fs, cg)
        else:
            parent = cgroups.get(cg.parent) if cg.parent is not None else None
            above = parent.pod if parent is not None else None
        try:
            cgroups[cg] = read_cgroup(fs, cg, above)
        except Vanished:
            if cg == root:
                raise
    processes: dict[int, ProcessInfo] = {}
    if with_processes:
        entries = registry.load_entries() if registry is not None else {}
        resolver = BadnessResolver(proc, entries, rules)
        for info in cgroups.values():
            for pid in info.pids:
                try:
                    processes[pid] = read_process(proc, pid, info.path, resolver, with_oom_score)
                except (Vanished, ValueError):
                    continue
    meminfo = proc.meminfo_kb()
    return Snapshot(
        version=fs.version,
        root=root,
        cgroups=MappingProxyType(cgroups),
        processes=MappingProxyType(processes),
        mem_total_kb=meminfo.get("MemTotal", 0),
        swap_total_kb=meminfo.get("SwapTotal", 0),
        page_size=os.sysconf("SC_PAGE_SIZE"),
        kernel_release=proc.kernel_release(),
    )


def kernel_params(proc: ProcFs, snap: Snapshot) -> KernelParams:
    """The host's values for the kernel heuristic: the snapshot's memory sizes plus the
    two sysctls it depends on (the only reads that policy needs beyond the snapshot)."""

    return KernelParams.of(
        snap,
        vm_swappiness=proc.sysctl("vm.swappiness") or 0,
        allocating_task=bool(proc.sysctl("vm.oom_kill_allocating_task")),
    )
