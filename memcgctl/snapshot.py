"""Fill an immutable :class:`~memcgctl.vocab.model.Snapshot` from the kernel files.

Cgroups or processes that vanish while we read are left out, never an error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
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
from memcgctl.vocab import structs
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.constants import fallback_badness
from memcgctl.vocab.errors import OverBudget, Vanished
from memcgctl.vocab.model import (
    BADNESS_DEFAULT,
    CgroupInfo,
    KernelParams,
    ProcessInfo,
    Snapshot,
)


def read_cgroup(
    fs: CgroupFs,
    cg: CgroupPath,
    parent_pod: str | None = None,
    node: tuple[os.stat_result, list[CgroupPath]] | None = None,
    swap: bool = True,
    pids: list[int] | None = None,
) -> CgroupInfo:
    """Raises Vanished if the cgroup disappears meanwhile.  ``parent_pod``: the pod the
    parent belongs to, which ``cg`` belongs to too unless it carries a label itself.
    ``node``: the directory's lstat and children, when the walk has them already.
    ``swap``: read the swap limit and swappiness (the kernel heuristic's totalpages
    needs them for the OOM root only).  ``pids``: its ``cgroup.procs``, when read
    already (a lazy snapshot's emptiness probe)."""
    st, kids = node if node is not None else fs.node(cg)
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
        pids=tuple(fs.procs(cg) if pids is None else pids),
        children=tuple(kids),
        swap_limit_bytes=fs.swap_limit(cg) if swap else None,
        swappiness=fs.swappiness(cg) if swap else None,
        events=events,
        events_local=events_local,
        ino=st.st_ino,
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


class LazyProcesses(Mapping[int, ProcessInfo]):
    """The processes of a snapshot, each read from /proc the first time it is looked at
    (then kept: one snapshot, one reading).  A process that exited before it was first
    looked at is not in it.  The strict-priority walk looks at the processes of the
    cgroups it compares, and at one per compared subtree to know it holds something
    killable: on a node with thousands of processes it reads a few (issue 22); anything
    that iterates (the kernel heuristic, ``ps``) reads them all, as before."""

    def __init__(
        self,
        proc: ProcFs,
        where: dict[int, CgroupPath],
        resolver: BadnessResolver,
        with_oom_score: bool,
        load_all: Callable[[], None] = lambda: None,
    ) -> None:
        self._proc = proc
        # pid -> cgroup, in the walk's order (cgroup.procs); with lazy cgroups, filled
        # as they are read (``load_all`` reads the rest)
        self._where = where
        self._load_all = load_all
        self._resolver = resolver
        self._with_oom_score = with_oom_score
        self._read: dict[int, ProcessInfo | None] = {}

    def _get(self, pid: object) -> ProcessInfo | None:
        if not isinstance(pid, int):
            return None
        if pid in self._read:
            return self._read[pid]
        cg = self._where.get(pid)
        if cg is None:
            self._load_all()
            cg = self._where.get(pid)
        info = None
        if cg is not None:
            try:
                info = read_process(self._proc, pid, cg, self._resolver, self._with_oom_score)
            except (Vanished, ValueError):
                info = None
        self._read[pid] = info
        return info

    def __getitem__(self, pid: int) -> ProcessInfo:
        info = self._get(pid)
        if info is None:
            raise KeyError(pid)
        return info

    def __contains__(self, pid: object) -> bool:
        return self._get(pid) is not None

    def __iter__(self) -> Iterator[int]:
        self._load_all()
        return (pid for pid in list(self._where) if self._get(pid) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def read_count(self) -> int:
        """How many processes were read so far (the benchmark and tests look)."""
        return len(self._read)


class LazyCgroups(Mapping[CgroupPath, CgroupInfo]):
    """The cgroups of a snapshot below ``root``, each read when first looked at (then
    kept).  The strict-priority walk looks at the children of each level it descends
    and, per compared subtree, down to the first killable process: on a node of
    thousands of cgroups it reads a few hundred (issue 22).  Iterating reads them all,
    in the walk's pre-order.  Each cgroup read registers its pids in ``where``."""

    def __init__(
        self,
        fs: CgroupFs,
        root: CgroupPath,
        where: dict[int, CgroupPath],
        budget: int | None = None,
    ) -> None:
        self._fs = fs
        self._root = root
        self._where = where
        # how many more cgroups may be looked at (a probe of its badness or usage, or a
        # read in full, each counts once); None: no bound.  Beyond it :class:`OverBudget`
        # is raised before anything is read (the daemon's refresh: issue 22)
        self._budget = budget
        self._read: dict[CgroupPath, CgroupInfo | None] = {}
        # each read cgroup's children as a set: a level of thousands of siblings (a
        # tenant's empty cgroups) is looked up in once per child, not scanned each time
        self._kids: dict[CgroupPath, frozenset[CgroupPath]] = {}
        self._all: list[CgroupPath] | None = None
        self._root_pod = _pod_above(fs, root)
        self._badness: dict[CgroupPath, tuple[int, str] | None] = {}
        self._usage: dict[CgroupPath, int | None] = {}
        self._empty: dict[CgroupPath, bool | None] = {}  # empty_of's answers
        # what empty_of read of a leaf: its lstat and processes, for a read in full after
        self._probed: dict[CgroupPath, tuple[os.stat_result, list[int]]] = {}

    def budget_left(self) -> int | None:
        """How many more cgroups may be looked at (None: no bound)."""
        return self._budget

    def _spend(self) -> None:
        if self._budget is not None:
            if self._budget <= 0:
                raise OverBudget(self._root)
            self._budget -= 1

    def badness_of(self, cg: CgroupPath) -> tuple[int, str] | None:
        """(badness, source) of ``cg`` from its xattrs alone (the snapshot's
        :attr:`~memcgctl.vocab.model.Snapshot.badness_probe`): the priority walk ranks
        a level's children by it and reads in full only the ones it compares (issue
        22).  The same reading as :func:`read_cgroup`'s; None: gone.  A cgroup read in
        full answers from that reading."""
        if cg in self._read:
            info = self._read[cg]
            return (info.badness, info.badness_source) if info is not None else None
        if cg in self._badness:
            return self._badness[cg]
        found: tuple[int, str] | None = None
        if self._root.contains(cg):
            self._spend()
            try:
                setting = read_setting(self._fs, cg, BADNESS)
                value = setting.value if setting.value is not None else BADNESS_DEFAULT
                found = (value, setting.source)
            except (Vanished, OSError):
                found = None
        self._badness[cg] = found
        return found

    def usage_of(self, cg: CgroupPath) -> int | None:
        """``cg``'s usage in bytes (0: unknown) from its usage file alone (the
        snapshot's :attr:`~memcgctl.vocab.model.Snapshot.usage_probe`); None: gone.
        A cgroup read in full later keeps this value: one snapshot, one reading."""
        if cg in self._read:
            info = self._read[cg]
            return (info.usage_bytes or 0) if info is not None else None
        if cg not in self._usage:
            found: int | None = None
            if self._root.contains(cg):
                self._spend()
                try:
                    found = self._fs.usage(cg) or 0
                except (Vanished, OSError):
                    found = None
            self._usage[cg] = found
        return self._usage[cg]

    def empty_of(self, cg: CgroupPath) -> bool | None:
        """Whether ``cg`` holds no process and no child cgroup, from its directory's
        link count (kernfs: 2 + its subdirectories) and its ``cgroup.procs`` alone
        (the snapshot's :attr:`~memcgctl.vocab.model.Snapshot.empty_probe`); None:
        gone.  A read in full afterwards uses what this read (one reading)."""
        if cg in self._read:
            info = self._read[cg]
            return (not info.pids and not info.children) if info is not None else None
        if cg in self._empty:
            return self._empty[cg]
        found: bool | None = None
        if self._root.contains(cg):
            self._spend()
            try:
                st, kids = self._fs.node(cg)
                if kids:
                    found = False  # it has children: read in full when looked into
                else:
                    pids = self._fs.procs(cg)
                    self._probed[cg] = (st, pids)
                    found = not pids
            except (Vanished, OSError):
                found = None
        self._empty[cg] = found
        return found

    def _get(self, cg: object) -> CgroupInfo | None:
        if not isinstance(cg, str) or not self._root.contains(cg):
            return None
        path = cg if isinstance(cg, CgroupPath) else CgroupPath(cg)
        if path in self._read:
            return self._read[path]
        # parents first (a cgroup's pod is its parent's unless labelled): iteratively
        chain = [path]
        while chain[-1] != self._root and chain[-1].parent not in self._read:
            parent = chain[-1].parent
            assert parent is not None
            chain.append(parent)
        info = None
        for cur in reversed(chain):
            if cur == self._root:
                above = self._root_pod
            else:
                assert cur.parent is not None
                parent_info = self._read.get(cur.parent)
                if parent_info is None or cur not in self._children_of(parent_info):
                    self._read[cur] = None  # its parent is gone, or never listed it
                    info = None
                    continue
                above = parent_info.pod
            probed = self._probed.pop(cur, None)
            if probed is None:
                self._spend()  # (what the chain read so far is kept)
            node: tuple[os.stat_result, list[CgroupPath]] | None = None
            pids: list[int] | None = None
            if probed is not None:  # a leaf: what the probe read, not read again
                node, pids = (probed[0], []), probed[1]
            try:
                info = read_cgroup(self._fs, cur, above, node, swap=cur == self._root, pids=pids)
            except Vanished:
                info = None
            except OSError:
                info = None  # unreadable: left out, as a vanished one
            if info is not None:
                info = self._as_probed(info)
            self._read[cur] = info
            if info is not None:
                for pid in info.pids:
                    self._where.setdefault(pid, cur)
        return info

    def _children_of(self, info: CgroupInfo) -> frozenset[CgroupPath]:
        kids = self._kids.get(info.path)
        if kids is None:
            kids = self._kids[info.path] = frozenset(info.children)
        return kids

    def _as_probed(self, info: CgroupInfo) -> CgroupInfo:
        """``info`` with the usage the walk ranked it by, where it probed that first
        (the same file, moments earlier: one snapshot, one reading).  Not so the
        badness: one that changed meanwhile (to 1000: never) is the one that counts."""
        usage = self._usage.get(info.path)
        if usage is not None and usage != (info.usage_bytes or 0):
            info = structs.replace(info, usage_bytes=usage)
        return info

    def load_all(self) -> None:
        if self._all is None:
            order: list[CgroupPath] = []
            stack = [self._root]
            while stack:
                cur = stack.pop()
                info = self._get(cur)
                if info is None:
                    continue
                order.append(cur)
                stack.extend(reversed(info.children))
            self._all = order

    def __getitem__(self, cg: CgroupPath) -> CgroupInfo:
        info = self._get(cg)
        if info is None:
            raise KeyError(cg)
        return info

    def __contains__(self, cg: object) -> bool:
        return self._get(cg) is not None

    def __iter__(self) -> Iterator[CgroupPath]:
        self.load_all()
        assert self._all is not None
        return iter(self._all)

    def __len__(self) -> int:
        self.load_all()
        assert self._all is not None
        return len(self._all)

    @property
    def read_count(self) -> int:
        return len(self._read)


def take_snapshot(
    fs: CgroupFs,
    proc: ProcFs,
    registry: ProcessRegistry | None,
    root: CgroupPath = ROOT,
    with_processes: bool = True,
    with_oom_score: bool = False,
    rules: RuleSet | None = None,
    lazy: bool = False,
    budget: int | None = None,
) -> Snapshot:
    """``lazy``: cgroups and processes are read when first looked at
    (:class:`LazyCgroups`, :class:`LazyProcesses`): for the priority walk.  ``budget``
    (lazy only): looking at more cgroups than that raises :class:`OverBudget`."""
    if lazy:
        where: dict[int, CgroupPath] = {}
        lazy_cgroups = LazyCgroups(fs, root, where, budget)
        if root not in lazy_cgroups:
            raise Vanished(root)
        entries = registry.load_entries() if registry is not None and with_processes else {}
        resolver = BadnessResolver(proc, entries, rules)
        meminfo = proc.meminfo_kb()
        lazy_processes: Mapping[int, ProcessInfo] = {}
        if with_processes:
            lazy_processes = LazyProcesses(
                proc, where, resolver, with_oom_score, lazy_cgroups.load_all
            )
        return Snapshot(
            version=fs.version,
            root=root,
            cgroups=lazy_cgroups,
            processes=lazy_processes,
            mem_total_kb=meminfo.get("MemTotal", 0),
            swap_total_kb=meminfo.get("SwapTotal", 0),
            page_size=os.sysconf("SC_PAGE_SIZE"),
            kernel_release=proc.kernel_release(),
            badness_probe=lazy_cgroups.badness_of,
            usage_probe=lazy_cgroups.usage_of,
            empty_probe=lazy_cgroups.empty_of,
        )
    cgroups: dict[CgroupPath, CgroupInfo] = {}
    with fs.xattr_names_cached():
        # pre-order: a parent is read before its children
        for cg, st, kids in fs.walk_nodes(root):
            if cg == root:
                above = _pod_above(fs, cg)
            else:
                parent = cgroups.get(cg.parent) if cg.parent is not None else None
                above = parent.pod if parent is not None else None
            try:
                cgroups[cg] = read_cgroup(fs, cg, above, (st, kids), swap=cg == root)
            except Vanished:
                if cg == root:
                    raise
    if root not in cgroups:
        raise Vanished(root)
    processes: Mapping[int, ProcessInfo] = {}
    if with_processes:
        eager: dict[int, ProcessInfo] = {}
        processes = eager
        entries = registry.load_entries() if registry is not None else {}
        resolver = BadnessResolver(proc, entries, rules)
        for info in cgroups.values():
            for pid in info.pids:
                try:
                    eager[pid] = read_process(proc, pid, info.path, resolver, with_oom_score)
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
