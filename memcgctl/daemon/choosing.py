"""Choosing a watch's victim for the core, and choosing it ahead (issue 22).

At the deadline the kill should be only a signal, so the victim is chosen before it:
with a delay, just before the deadline (:meth:`Chooser.lead`: twice what the last
choice took, 5 ms - 0.5 s); with delay 0 (a delay shorter than a choice takes) as a
*standing plan*, kept while the ports read the watch as ``near`` its line and chosen
again at most every :data:`PLAN_MIN_PERIOD` and :data:`PLAN_COST` times what that took
(so refreshing costs at most a tenth of a core).  At the event the plan is used while
it holds — young enough, its victim alive, what it rests on unchanged
(:meth:`~memcgctl.daemon.protocol.CorePorts.plan_holds`: the tree watch's mark, the
compared cgroups' processes) — and otherwise the victim is chosen afresh, by the same
selection (the one ``predict-victim`` uses).

A refresh never holds the loop for long (issue 22, a tenant's thousands of empty
cgroups ranked first in a delegated subtree):

* its choice looks at :data:`REFRESH_MAX_LOOKS` cgroups at most (the lazy snapshot's
  budget); beyond, no plan is kept — a plan resting on that many cgroups could not be
  checked at the event anyway (``STAMP_MAX_CGROUPS``, daemon/ports.py);
* once no plan could be kept (a stamp refused, the budget spent), the watch is not
  chosen again while the tree watch's mark for its domain is unchanged, for
  :data:`PLAN_REFUSED_RETRY` at most.  The mark moves with every cgroup made or removed
  there and every badness xattr written; what it does not see — processes come,
  gone or moved, a process's own badness (the registry, ``oom_score_adj``), sizes —
  may turn the refusal into a plan that could be kept, which the retry finds.  Never
  the victim: without a plan it is chosen afresh at the event, by the same selection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from memcgctl.daemon.protocol import CorePorts, Mode
from memcgctl.logic.decision import Decision
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.errors import OverBudget
from memcgctl.vocab.model import Snapshot

TYPE_CHECKING = False
if TYPE_CHECKING:  # the core's per-watch state, which the core module defines
    from memcgctl.daemon.core import Watch

Select = Callable[[Snapshot, CgroupPath, Iterable[int]], Decision]

# A standing plan is chosen again at most every PLAN_MIN_PERIOD and every PLAN_COST
# times what the last refresh took (so refreshing costs at most a tenth of a core), and
# used at most two refresh periods (at most PLAN_MAX_AGE) after it was chosen.
PLAN_MIN_PERIOD = 0.05
PLAN_COST = 10
PLAN_MAX_AGE = 2.0
PLAN_UNCHECKABLE = 1.0  # no stamp (no tree watch, no priority walk): try again this late
# A refresh's choice looks at this many cgroups at most (each probe of a badness or a
# usage, each cgroup read in full, counts once): a node's level of a few hundred pods
# fits (300 pods of 4 containers, 43 of them tied in usage: 1,147 looks); a tenant's
# 2,000 empty cgroups ranked first do not (its refresh stops there: ~30 ms on v1).
REFRESH_MAX_LOOKS = 2048
# No plan kept: not chosen again before this while the domain's tree mark is the same
PLAN_REFUSED_RETRY = 30.0
REFUSED_KEPT = 64  # refusals remembered before the expired ones are dropped


class Chooser:
    """Chooses victims (one snapshot of the OOM domain + the selection), times what a
    choice takes, and keeps the watches' standing plans.  ``clock`` None: nothing is
    chosen ahead (the core's tests without time)."""

    def __init__(self, ports: CorePorts, select: Select, clock: Callable[[], float] | None) -> None:
        self.ports = ports
        self.select = select
        self.clock = clock
        self.prep_s = 0.005  # how long the last snapshot + selection took
        # watch -> (the domain's tree mark, until when) where no plan could be kept
        self.refused: dict[Scope, tuple[object, float]] = {}
        self.skipped = 0  # refreshes not chosen again (refused at the same mark)
        # (kind, cgroup, fields): a debug line, not journaled (daemon/main.py)
        self.debug: Callable[[str, Scope, dict[str, object]], None] | None = None

    def decide(self, w: Watch, budget: int | None = None) -> Decision:
        """The victim now (a snapshot of w's domain and the selection); ``budget``:
        :class:`OverBudget` when that means looking at more cgroups."""
        t0 = self.clock() if self.clock is not None else 0.0
        if budget is None:
            snap = self.ports.snapshot(w.domain)
        else:
            snap = self.ports.snapshot(w.domain, budget=budget)
        decision = self.select(snap, w.domain, w.killed)
        if self.clock is not None:
            self.prep_s = self.clock() - t0
        return decision

    def lead(self) -> float:
        """How long before a deadline to choose: twice the last choice, 5 ms - 0.5 s."""
        return min(max(2 * self.prep_s, 0.005), 0.5)

    def plans_ahead(self, w: Watch) -> bool:
        """A delay shorter than a choice takes (delay 0): the victim is chosen ahead."""
        return self.clock is not None and w.delay_ms / 1000 < self.lead()

    def keeps_plan(self, w: Watch) -> bool:
        """Whether w keeps a standing plan now: near its line, out of an episode, with
        a delay shorter than a choice takes (delay 0), so that at the event the kill
        is only a signal (a longer delay is chosen for just before its deadline)."""
        return w.near and w.episode_start is None and self.plans_ahead(w)

    def refresh(self, w: Watch, now: float) -> None:
        """Choose w's victim again (one brief walk) and read what the choice rests on;
        the next refresh no sooner than PLAN_COST times what this one took."""
        assert self.clock is not None
        t0 = self.clock()
        # the loop's now may precede a stop (SIGSTOP/SIGCONT): the plan's age, its
        # retry and its next refresh count from this choice
        now = max(now, t0)
        mark = self.ports.plan_mark(w.domain)
        refused = self.refused.get(w.cg)
        if refused is not None and mark is not None and refused[0] == mark and now < refused[1]:
            # no plan could be kept, and nothing the tree watch sees changed since
            self.skipped += 1
            w.plan, w.plan_stamp = None, None
            w.next_refresh = now + PLAN_UNCHECKABLE
            if w.mode is not Mode.HOST:
                w.next_check = w.next_refresh
            return
        why = "stamp"
        try:
            plan: Decision | None = self.decide(w, REFRESH_MAX_LOOKS)
        except OverBudget:
            plan, why = None, "looks"  # too many cgroups to look at: none kept
        stamp = None
        if plan is not None and plan.victim is not None:
            stamp = self.ports.plan_stamp(plan)
        took = self.clock() - t0
        period = max(PLAN_MIN_PERIOD, PLAN_COST * took)
        if stamp is None:  # it could not be checked at the event: none kept
            w.plan, w.plan_stamp = None, None
            w.next_refresh = now + max(period, PLAN_UNCHECKABLE)
            # not again while the domain's tree stays the same: as it was before the
            # choice and after the stamp (a change meanwhile, or events still unread
            # at the stamp that concern the domain, move it: chosen again)
            if mark is not None and self.ports.plan_mark(w.domain) == mark:
                if len(self.refused) >= REFUSED_KEPT:  # (watches come and go: pods)
                    self.refused = {k: v for k, v in self.refused.items() if v[1] > now}
                self.refused[w.cg] = (mark, now + PLAN_REFUSED_RETRY)
            if self.debug is not None:
                fields = {"domain": w.domain, "why": why, "took_ms": round(took * 1000, 1)}
                self.debug("plan_refused", w.cg, fields)
        else:
            self.refused.pop(w.cg, None)
            w.plan, w.plan_stamp, w.plan_at = plan, stamp, now
            w.next_refresh = now + period
            # the host refreshes at its polls: its plan may be a poll interval old
            every = max(period, w.poll_s if w.mode is Mode.HOST else 0.0)
            w.plan_until = now + min(2 * every, PLAN_MAX_AGE)
        if w.mode is not Mode.HOST:
            w.next_check = w.next_refresh

    def take(self, w: Watch, now: float) -> tuple[Decision, float] | None:
        """w's plan and its age (ms) if it still holds, else None (chosen afresh); the
        plan is used up either way.  A standing plan holds while it is young enough and
        what it rests on is unchanged (the tree watch's mark, the compared cgroups'
        processes, its victim listed in its cgroup: neither gone, nor a zombie, nor
        moved); its signal then goes through the pidfd pinned when it was chosen, so a
        victim that died since is not mistaken for a process that got its pid (the
        kill finds it gone and the victim is chosen afresh).  A plan chosen just before
        a deadline holds while its victim is alive."""
        plan, w.plan = w.plan, None
        stamp, w.plan_stamp = w.plan_stamp, None
        if plan is None or plan.victim is None:
            return None
        if stamp is not None:
            if now > w.plan_until or not self.ports.plan_holds(plan, stamp):
                return None
        elif not self.ports.alive([plan.victim.pid]):
            return None
        return plan, max(now - w.plan_at, 0.0) * 1000
