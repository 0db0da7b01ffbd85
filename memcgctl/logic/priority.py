"""The strict-priority policy: pure functions over a :class:`~memcgctl.vocab.model.Snapshot`.

:func:`select_priority` walks down from the OOM root: at each level the candidates are
the child cgroups and the processes attached there, the lowest badness dies first, a
chosen cgroup is descended into and a chosen process is the victim.  ``predict-victim``,
``explain-kill`` (via the post-mortem) and the daemon call it; :func:`rank_priority`
gives the next victims after the first (``--top``), and :func:`lowest_priority_child`
the daemon's kill-all target.  Nothing here reads a file.

Delegation (SPEC §2.3): a cgroup badness read from ``user.*`` (``badness_source ==
"user"``) ranks a cgroup only among its siblings inside its owner's subtree.  Its 1000
is "last inside my subtree", never "protect my subtree": such a cgroup stays a
candidate, ranked after every lower badness (:func:`never_cgroup`), so a subtree whose
trusted badness makes it the first to die still yields its victim however its owner
ranked what is inside.  Only a ``trusted.*`` (or process) 1000 means "never".
"""

from __future__ import annotations

from collections.abc import Iterable

from memcgctl.logic.decision import PRIORITY, Candidate, Decision, Level, kids, victim_group
from memcgctl.vocab import structs
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.model import BADNESS_NEVER, CgroupInfo, ProcessInfo, Snapshot
from memcgctl.vocab.reasons import (
    LevelChoice,
    Lost,
    NoKillableAt,
    NotInSnapshot,
    Reason,
    Skip,
    Tie,
    Verdict,
    Win,
)

# -- policy "priority" ---------------------------------------------------------------


def never_cgroup(cg: CgroupInfo) -> bool:
    """True when ``cg`` and its subtree must never be chosen: badness 1000 set by root
    (``trusted.*``).  A delegated user's ``user.*`` 1000 only ranks it last among its
    siblings inside the user's subtree (see the module doc)."""
    return _never(cg.badness, cg.badness_source)


def _never(badness: int, source: str) -> bool:
    return badness >= BADNESS_NEVER and source != "user"


def _process_skip(p: ProcessInfo, exclude: frozenset[int]) -> Skip | None:
    if p.pid in exclude:
        return Skip.ALREADY_CHOSEN
    if not p.killable:
        return Skip.INIT if p.pid == 1 else Skip.NO_MEMORY
    if p.badness >= BADNESS_NEVER:
        if p.badness_source == "oom_score_adj":
            return Skip.ADJ_NEVER
        return Skip.BADNESS_NEVER
    return None


class _Viability:
    """Memo: the lowest selectable pid in each subtree (None = nothing to kill there)."""

    def __init__(self, snap: Snapshot, exclude: frozenset[int], by_usage: bool = False) -> None:
        self.snap = snap
        self.exclude = exclude
        # search the children by usage too (the brief walk: it looks into one subtree
        # and follows it; the full walk looks into all, where the reads cost more)
        self.by_usage = by_usage
        self.memo: dict[str, int | None] = {}
        self.alive: dict[str, bool] = {}  # any_killable, where min_pid was not needed

    def min_pid(self, cg: CgroupInfo) -> int | None:
        # post-order with an explicit stack, not recursion: a subtree may be thousands
        # of levels deep (issue 21)
        memo = self.memo
        stack: list[tuple[CgroupInfo, bool]] = [(cg, False)]
        while stack:
            cur, expanded = stack.pop()
            if cur.path in memo:
                continue
            live = [k for k in kids(self.snap, cur) if not never_cgroup(k)]
            if not expanded:
                stack.append((cur, True))
                stack.extend((k, False) for k in live if k.path not in memo)
                continue
            best: int | None = None
            for p in self.snap.processes_in(cur.path):
                if _process_skip(p, self.exclude) is None and (best is None or p.pid < best):
                    best = p.pid
            for k in live:
                m = memo.get(k.path)
                if m is not None and (best is None or m < best):
                    best = m
            memo[cur.path] = best
        return memo[cg.path]

    def any_killable(self, cg: CgroupInfo) -> bool:
        """Whether ``cg``'s subtree holds a selectable process: :meth:`min_pid` is not
        None, but stopping at the first one found, so a walk that only needs to know
        reads one process per compared subtree, not all of them (issue 22: a lazy
        snapshot reads a process when it is first looked at).  A child is skipped on
        its badness alone (:meth:`Snapshot.badness_of`) and read in full only when the
        search reaches it; the search goes where the walk would (the lowest badness,
        then, for the brief walk, the largest usage: :meth:`Snapshot.usage_of`)
        first.  A child that holds no process and no child cgroup
        (:meth:`Snapshot.holds_nothing`, a probe) is passed over unread: a tenant's
        thousands of empty cgroups ranked first cost a probe each (issue 22)."""
        if cg.path in self.memo:
            return self.memo[cg.path] is not None
        found = self.alive.get(cg.path)
        if found is not None:
            return found
        snap = self.snap
        processes = snap.processes
        stack: list[CgroupInfo | CgroupPath] = [cg]
        found = False
        while stack and not found:
            top = stack.pop()
            if not isinstance(top, CgroupInfo) and snap.holds_nothing(top):
                continue  # no process, no child cgroup: told without reading it in full
            cur = top if isinstance(top, CgroupInfo) else snap.cgroups.get(top)
            if cur is None:
                continue
            if cur.path in self.memo:
                found = self.memo[cur.path] is not None
                continue
            for pid in cur.pids:
                p = processes.get(pid)
                if p is not None and _process_skip(p, self.exclude) is None:
                    found = True
                    break
            live = []
            for kid in cur.children:
                b = snap.badness_of(kid)
                if b is not None and not _never(*b):
                    usage = (snap.usage_of(kid) or 0) if self.by_usage else 0
                    live.append((b[0], -usage, kid))
            # in the walk's order (the lowest badness, then the largest usage), popped
            # first: the walk goes there next anyway, and an empty subtree (no usage)
            # is searched last
            live.sort(key=lambda e: (e[0], e[1]), reverse=True)
            stack += [kid for _, _, kid in live]
        self.alive[cg.path] = found
        return found


def _rank_head(c: Candidate) -> tuple[int, int, int]:
    """The rank without the final tie-breaks (which may need a subtree scan)."""
    if c.process is not None:
        return (c.badness, 1, -c.process.rss_kb)
    return (c.badness, 0, -c.usage_bytes)


def _ranked(cands: Iterable[Candidate], viable: _Viability) -> list[Candidate]:
    """The candidates in :func:`_rank_key` order where it chooses: the first ones, tied
    in badness, kind and size with the first, by the lowest pid inside (a scan of each
    tied subtree).  Further ties, which choose nothing, are listed by name (cgroups) or
    pid (processes) without that scan: a walk over thousands of equal pods reads one
    process per pod, not all of them (issue 22)."""
    head = sorted(cands, key=_rank_head)
    out: list[Candidate] = []
    i = 0
    while i < len(head):
        j = i + 1
        while j < len(head) and _rank_head(head[j]) == _rank_head(head[i]):
            j += 1
        run = head[i:j]
        if len(run) > 1:
            if i == 0:
                run.sort(key=lambda c: _rank_key(c, viable))
            else:
                run.sort(key=lambda c: c.process.pid if c.process else 0)
                run.sort(key=lambda c: c.cgroup.path if c.cgroup else "")
        out += run
        i = j
    return out


def _rank_key(c: Candidate, viable: _Viability) -> tuple[int, int, int, int, str]:
    """Ascending: the first one dies.  Lowest badness; on equal badness a cgroup beats
    a process; cgroups by largest usage, processes by largest rss; then lowest pid
    (for a cgroup: the lowest killable pid inside it); then the name."""
    if c.process is not None:
        return (c.badness, 1, -c.process.rss_kb, c.process.pid, "")
    assert c.cgroup is not None
    return (c.badness, 0, -c.usage_bytes, viable.min_pid(c.cgroup) or 0, c.cgroup.path)


def _verdict(c: Candidate, chosen: Candidate, others: list[Candidate]) -> Verdict:
    """Why ``c`` lost to ``chosen`` (or, for ``chosen`` itself, why it won against
    ``others``, the other eligible candidates)."""
    if c is chosen:
        if not others:
            return Verdict(only=True)
        return Verdict(win=_win(chosen, [chosen, *others]))
    if c.badness != chosen.badness:
        return Verdict(lost=Lost.HIGHER_BADNESS, badness=c.badness, chosen_badness=chosen.badness)
    if c.kind != chosen.kind:
        return Verdict(lost=Lost.CGROUP_FIRST)
    if c.kind == "cgroup":
        if c.usage_bytes != chosen.usage_bytes:
            return Verdict(lost=Lost.SMALLER_USAGE, usage_bytes=c.usage_bytes)
        return Verdict(lost=Lost.HIGHER_PID_INSIDE)
    if c.rss_kb != chosen.rss_kb:
        return Verdict(lost=Lost.SMALLER_RSS, rss_kb=c.rss_kb)
    return Verdict(lost=Lost.HIGHER_PID)


def _win(chosen: Candidate, ranked: list[Candidate]) -> Win:
    """The lowest badness; for a process, whether it beat sibling cgroups; the tie
    break that decided, if there was one."""
    beat = chosen.kind == "process" and any(o.kind == "cgroup" for o in ranked[1:])
    return Win(chosen.badness, beat, _tie(chosen, ranked))


def _tie(chosen: Candidate, ranked: list[Candidate]) -> Tie | None:
    rivals = [c for c in ranked[1:] if c.badness == chosen.badness and c.kind == chosen.kind]
    if not rivals:
        if any(c.badness == chosen.badness for c in ranked[1:]):
            return Tie.CGROUP_BEFORE_PROCESS
        return None
    if chosen.kind == "cgroup":
        if all(r.usage_bytes == chosen.usage_bytes for r in rivals[:1]):
            return Tie.LOWEST_PID_INSIDE
        return Tie.LARGEST_USAGE
    if all(r.rss_kb == chosen.rss_kb for r in rivals[:1]):
        return Tie.LOWEST_PID
    return Tie.LARGEST_RSS


def _cgroup_candidates(snap: Snapshot, level: CgroupInfo, viable: _Viability) -> list[Candidate]:
    """``level``'s child cgroups as candidates; skipped: badness 1000 (trusted: a
    ``user.*`` 1000 is only the last rank) and nothing to kill."""
    cands: list[Candidate] = []
    for kid in kids(snap, level):
        skip = None
        if never_cgroup(kid):
            skip = Skip.BADNESS_NEVER
        elif not viable.any_killable(kid):
            skip = Skip.NOTHING_INSIDE
        cands.append(Candidate("cgroup", kid.badness, cgroup=kid, skip=skip))
    return cands


def lowest_priority_child(snap: Snapshot, path: CgroupPath) -> CgroupPath | None:
    """The child cgroup of ``path`` that the priority ranking puts first among the child
    cgroups (the daemon's kill-all target when escalation runs out of rounds); None if
    no child holds anything killable."""
    level = snap.cgroups.get(path)
    if level is None:
        return None
    viable = _Viability(snap, frozenset())
    eligible = [c for c in _cgroup_candidates(snap, level, viable) if c.skip is None]
    if not eligible:
        return None
    first = _ranked(eligible, viable)[0].cgroup
    assert first is not None
    return first.path


# The brief walk lists at most this many skipped candidates per level (a cgroup skipped
# for holding nothing was read in full); beyond, a candidate the snapshot's probe tells
# holds no process and no child cgroup (:meth:`Snapshot.holds_nothing`) is skipped
# unread and counted (:attr:`Level.unlisted`): a tenant's thousands of empty cgroups
# ranked first cost a probe each (issue 22).  A decision with such a level rests on
# more cgroups than a standing plan could check (:func:`plan_inputs`: none).
LISTED_EMPTY = 64


def _brief_level(
    snap: Snapshot, level: CgroupInfo, viable: _Viability, gone: frozenset[int]
) -> tuple[list[Candidate], list[Candidate], int, int, int]:
    """One level of the brief walk: (the eligible candidates looked into, ranked; the
    candidates looked into and skipped; how many were ranked after the chosen one
    without being looked into; how many candidates there are in all; how many were
    skipped unlisted, beyond :data:`LISTED_EMPTY`).

    The children are ranked by their badness alone (one xattr read each:
    :meth:`Snapshot.badness_of`).  Badness by badness from the lowest, the candidates
    of that badness are taken in the full walk's order (:func:`_rank_head`: a cgroup
    before a process, the largest usage first, a cgroup's usage read alone:
    :meth:`Snapshot.usage_of`), each cgroup read in full and asked whether it holds
    anything killable, until one does; the candidates tied with it are asked too (the
    lowest pid inside breaks that tie, as in the full walk), the rest lose without
    being looked into.  The same victim as the full walk, without reading the pods
    that would lose anyway (issue 22)."""
    procs = [
        Candidate("process", p.badness, process=p, skip=_process_skip(p, gone))
        for p in snap.processes_in(level.path)
    ]
    skipped = [c for c in procs if c.skip is not None]
    live = [c for c in procs if c.skip is None]
    by_badness: list[tuple[int, CgroupPath]] = []
    never = 0
    for path in level.children:
        found = snap.badness_of(path)
        if found is None:
            continue
        if _never(*found):
            never += 1
        else:
            by_badness.append((found[0], path))
    total = len(procs) + len(by_badness) + never
    values = sorted({b for b, _ in by_badness} | {c.badness for c in live})
    unlisted = 0
    for n, b in enumerate(values):
        # this badness's candidates in the full walk's order, the cgroups by their
        # usage alone (:meth:`Snapshot.usage_of`); read in full when looked into
        group: list[tuple[tuple[int, int, int], Candidate | CgroupPath]] = [
            (_rank_head(c), c) for c in live if c.badness == b
        ]
        for kb, path in by_badness:
            usage = snap.usage_of(path) if kb == b else None
            if usage is not None:
                group.append(((b, 0, -usage), path))
        group.sort(key=lambda e: e[0])
        eligible: list[Candidate] = []
        head: tuple[int, int, int] | None = None
        looked = 0
        for rank, item in group:
            if eligible and rank != head:
                break  # it and the rest of this badness lose to the ones found
            looked += 1
            if isinstance(item, Candidate):
                c = item
            else:
                if len(skipped) >= LISTED_EMPTY and snap.holds_nothing(item):
                    unlisted += 1  # nothing inside: skipped, as it would be when read
                    continue
                info = snap.cgroups.get(item)
                if info is None:
                    continue
                c = Candidate("cgroup", info.badness, cgroup=info)
                if never_cgroup(info):  # its badness changed since it was ranked
                    skipped.append(structs.replace(c, skip=Skip.BADNESS_NEVER))
                    continue
                if not viable.any_killable(info):
                    skipped.append(structs.replace(c, skip=Skip.NOTHING_INSIDE))
                    continue
            if not eligible:
                head = rank
            eligible.append(c)
        if eligible:
            higher = frozenset(values[n + 1 :])
            unchecked = never + len(group) - looked
            unchecked += sum(1 for kb, _ in by_badness if kb in higher)
            unchecked += sum(1 for c in live if c.badness in higher)
            return _ranked(eligible, viable), skipped, unchecked, total, unlisted
    return [], skipped, 0, total, unlisted


def select_priority_brief(
    snap: Snapshot, oom_root: CgroupPath, exclude: Iterable[int] = ()
) -> Decision:
    """:func:`select_priority` as the daemon calls it: ``brief``."""
    return select_priority(snap, oom_root, exclude, brief=True)


def select_priority(
    snap: Snapshot, oom_root: CgroupPath, exclude: Iterable[int] = (), brief: bool = False
) -> Decision:
    """The strict-priority victim below ``oom_root``.

    At each level L (starting at the OOM root) the candidates are L's child cgroups and
    the processes attached to L.  The lowest badness dies first; ties among cgroups go
    to the largest usage, among processes to the largest rss, and between a cgroup and
    a process to the cgroup; remaining ties to the lowest pid.  Badness 1000, init,
    kernel threads and cgroups with nothing killable inside are skipped.  A chosen
    cgroup is descended into; a chosen process is the victim.  ``memory.oom.group``
    widens the kill to the highest group between the victim and the OOM root.

    ``exclude``: pids to treat as gone (the next victim after those; the daemon's
    escalation and ``--top``).

    ``brief`` (the daemon, at an OOM): the same victim, but at each level only the
    candidates of the lowest badness that has an eligible one are looked into
    (:func:`_brief_level`); those with a higher badness are counted in the level's
    reason (``unchecked``), not listed in its candidates.  On a node with hundreds of
    pods per level the full walk reads every pod to say whether it holds anything
    killable; the brief one reads their badness (issue 22).
    """
    gone = frozenset(exclude)
    viable = _Viability(snap, gone, by_usage=brief)
    start = snap.cgroups.get(oom_root)
    if start is None:
        return Decision(PRIORITY, oom_root, None, reasons=(NotInSnapshot(oom_root),))
    walk: list[Level] = []
    reasons: list[Reason] = []
    level = start
    while True:
        unchecked = unlisted = 0
        if brief:
            eligible, skipped, unchecked, n_cands, unlisted = _brief_level(
                snap, level, viable, gone
            )
        else:
            cands = _cgroup_candidates(snap, level, viable)
            for p in snap.processes_in(level.path):
                cands.append(
                    Candidate("process", p.badness, process=p, skip=_process_skip(p, gone))
                )
            eligible = _ranked((c for c in cands if c.skip is None), viable)
            skipped = [c for c in cands if c.skip is not None]
            n_cands = len(cands)
        if not eligible:
            walk.append(Level(level.path, tuple(_skipped(c) for c in skipped), None, unlisted))
            reasons.append(NoKillableAt(level.path))
            return Decision(PRIORITY, oom_root, None, walk=tuple(walk), reasons=tuple(reasons))
        chosen = eligible[0]
        noted = [_with_verdict(c, _verdict(c, chosen, eligible[1:])) for c in eligible]
        chosen_noted = noted[0]
        listed = tuple(noted + [_skipped(c) for c in skipped])
        walk.append(Level(level.path, listed, chosen_noted, unlisted))
        reasons.append(
            LevelChoice(
                level.path,
                len(eligible),
                n_cands,
                chosen.kind,
                chosen.cgroup.path if chosen.cgroup is not None else None,
                chosen.process.pid if chosen.process is not None else None,
                chosen.process.comm if chosen.process is not None else None,
                _win(chosen, eligible),
                unchecked,
            )
        )
        if chosen.process is not None:
            victim = chosen.process
            group, pids, group_reasons = victim_group(snap, victim, oom_root)
            return Decision(
                PRIORITY,
                oom_root,
                victim,
                kill_group=group,
                group_pids=pids,
                walk=tuple(walk),
                reasons=tuple(reasons + group_reasons),
            )
        assert chosen.cgroup is not None
        level = chosen.cgroup


def _with_verdict(c: Candidate, verdict: Verdict) -> Candidate:
    return Candidate(c.kind, c.badness, c.cgroup, c.process, c.skip, verdict)


def _skipped(c: Candidate) -> Candidate:
    return _with_verdict(c, Verdict(skip=c.skip))


def plan_inputs(decision: Decision) -> tuple[tuple[CgroupPath, bool], ...]:
    """The cgroups whose processes a priority decision rests on, each with whether its
    whole subtree counts: every level of the walk (the processes attached there are
    candidates; the last one holds the victim) and, whole, each cgroup skipped at a
    level for holding nothing killable whose badness does not rank it after the chosen
    one (a process arriving there would win).  While their processes are the same, the
    decision is the one a fresh walk would make, but for sizes and the processes' own
    badness (the daemon's standing plan bounds its age for those).  Empty for a
    decision without a priority walk or victim, and for one whose brief walk skipped
    candidates unlisted (:data:`LISTED_EMPTY`: more than a plan could check)."""
    if decision.policy != PRIORITY or decision.victim is None:
        return ()
    if any(level.unlisted for level in decision.walk):
        return ()
    out: list[tuple[CgroupPath, bool]] = []
    for level in decision.walk:
        out.append((level.cgroup, False))
        if level.chosen is None:
            continue
        for c in level.candidates:
            if (
                c.skip is Skip.NOTHING_INSIDE
                and c.cgroup is not None
                and c.badness <= level.chosen.badness
            ):
                out.append((c.cgroup.path, True))
    return tuple(out)


def protected_pids(snap: Snapshot, top: CgroupPath) -> frozenset[int]:
    """The processes below ``top`` whose effective badness is 1000: their own (process
    badness or ``oom_score_adj`` -1000), or a "never" cgroup (:func:`never_cgroup`)
    between ``top`` (exclusive: an OOM root's own badness ranks it against its
    siblings, not what is inside) and them.  The daemon kills none of these, its
    escalation included."""
    never: set[CgroupPath] = set()
    out: set[int] = set()
    for cg in snap.walk(top):
        if cg.path != top and (never_cgroup(cg) or (cg.path.parent in never)):
            never.add(cg.path)
        shielded = cg.path in never
        for p in snap.processes_in(cg.path):
            if shielded or p.badness >= BADNESS_NEVER:
                out.add(p.pid)
    return frozenset(out)


def rank_priority(snap: Snapshot, oom_root: CgroupPath, n: int) -> list[Decision]:
    """The first ``n`` victims in priority order: each one as if the earlier ones (and
    their groups) were already gone."""
    out: list[Decision] = []
    gone: set[int] = set()
    while len(out) < n:
        d = select_priority(snap, oom_root, gone)
        if d.victim is None:
            break
        out.append(d)
        gone.update(d.group_pids or (d.victim.pid,))
    return out
