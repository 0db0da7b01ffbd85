"""The daemon's view of the cgroup tree below its root, kept up to date by inotify
instead of a walk of the whole tree every rescan (issue 22; issue 26's memory.high).

One inotify fd (kernel/inotify.py) in the loop's poll set, with

* a watch on every cgroup directory below the root: ``IN_CREATE``/``IN_DELETE`` and
  ``IN_MOVED_FROM``/``IN_MOVED_TO`` of subdirectories (a new cgroup is watched, its
  subtree listed, its delay and the cgroup rules read at once; a removed one leaves
  the managed set), ``IN_ATTRIB`` of the directory itself (a badness, an OOM delay or
  an owner written with setxattr/chown: its delay is read again);
* a watch on the limit files of every memcg the daemon holds (v2: its OOM domain's
  ``memory.high`` and ``memory.max``; v1: ``memory.limit_in_bytes`` and
  ``memory.soft_limit_in_bytes``): ``IN_MODIFY`` when systemd or a user writes one,
  and the loop rescans the managed set at once — the valve follows the user's value
  (SPEC §7) without waiting for the next periodic rescan.

A rescan then costs what changed plus one look at each managed memcg: the periodic
rescan (``--rescan``, 2 s) walks nothing.  A full walk still runs

* at start, and after ``IN_Q_OVERFLOW`` (events were lost);
* every :data:`FULL_EVERY_S` as a safety net, for what no event reports: a cgroup
  whose directory could not be watched while it raced with its parent's listing, a
  delegation changed on an ancestor above a delay's cgroup.  60 s: on a 5,000-cgroup
  node the walk (with a delay read per cgroup) is the daemon's idle cost — measured
  3.8 % of a core at one walk per 2 s (bench/idle_bench.py, docs/scale.md), so ~0.13 %
  once a minute — and what it could catch late has a benign fallback (a cgroup not
  managed yet is left to the kernel's OOM killer, as without the daemon).
* at every rescan when the watches are off: inotify could not be set up, or the tree
  needs more than half of ``fs.inotify.max_user_watches`` (a per-user limit: root's
  watches are shared with systemd and the other root daemons, which must not run out
  because of us), or they ran out anyway (ENOSPC).
  Said once (``tree_watch_off``), and the daemon goes on exactly as before this
  module: a walk per rescan.

A hostile user's mkdir/rmdir churn costs one event each (a watch added, a directory
listed, two xattrs read); the loop reads one batch per wake-up and rescans at most
every :data:`SETTLE_S`, so notifications and deadlines are still served in between.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable

from memcgctl.kernel import inotify as ino
from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.vocab.cgpath import CgroupPath, Scope
from memcgctl.vocab.errors import Vanished
from memcgctl.vocab.structs import dataclass, field

FULL_EVERY_S = 60.0  # the safety-net walk (see the module's docstring)
SETTLE_S = 0.05  # at most this often an event-driven rescan (churn is coalesced)
# cgroups whose last change mark() remembers; beyond, the deepest are remembered as a
# change of their parent (a tenant's churn of many names stays in its own subtree)
RECENT = 1024
PULSE_EVERY = 256  # cgroups walked between two pulses (the guardian, WatchdogSec=)
DIR_MASK = (
    ino.IN_CREATE
    | ino.IN_DELETE
    | ino.IN_MOVED_FROM
    | ino.IN_MOVED_TO
    | ino.IN_ATTRIB
    | ino.IN_ONLYDIR
    | ino.IN_DONT_FOLLOW
)
FILE_MASK = ino.IN_MODIFY
V2_LIMIT_FILES = ("memory.high", "memory.max")
V1_LIMIT_FILES = ("memory.limit_in_bytes", "memory.soft_limit_in_bytes")


@dataclass
class Pass:
    """What one rescan sees: after a walk (``full``) every cgroup; otherwise what
    changed since the last rescan."""

    full: bool
    created: dict[CgroupPath, int] = field(default_factory=dict)  # cgroup -> inode
    changed: set[CgroupPath] = field(default_factory=set)  # created, or xattrs/owner
    removed: set[CgroupPath] = field(default_factory=set)
    recreated: set[CgroupPath] = field(default_factory=set)  # removed, then made again


class TreeWatch:
    def __init__(
        self,
        fs: CgroupFs,
        root: CgroupPath,
        report: Callable[[str, CgroupPath, dict[str, object]], None],
        full_every: float = FULL_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
        make_inotify: Callable[[], ino.Inotify] = ino.Inotify,
        budget: int | None = None,
        debug: Callable[[str, CgroupPath, dict[str, object]], None] | None = None,
    ) -> None:
        self.fs = fs
        self.root = root
        self.report = report  # (kind, cgroup, fields): logged and journaled
        self.debug = debug  # (kind, cgroup, fields): a debug line, not journaled
        self.full_every = full_every
        self.clock = clock
        self.inodes: dict[CgroupPath, int] = {}  # every cgroup known below the root
        self._kids: dict[CgroupPath, set[CgroupPath]] = {}
        self._wd_of: dict[CgroupPath, int] = {}
        self._dir_of: dict[int, CgroupPath] = {}
        self._file_wds: dict[int, CgroupPath] = {}
        self._followed: dict[Scope, list[int]] = {}
        self._next_full = 0.0
        self._walk_due = True
        self._pending = Pass(False)
        self.current: Pass | None = None  # this rescan's, for the rules and the ports
        self.last: Pass | None = None  # the pass the last managed() read (the ports look)
        self._delays: dict[CgroupPath, int] = {}  # the managed set (ports.managed)
        self.off_reason: str | None = None
        self.stashed = False  # mark() read a batch that wants a rescan: the loop's next turn
        self._again = False  # a managed cgroup was re-created: rescan again soon
        self.stats = {"events": 0, "walks": 0, "overflows": 0}
        # every change an event reported, numbered, for mark(): the last one of each
        # cgroup (oldest first), and the last one anywhere (events lost)
        self.serial = 0
        self._changed: dict[CgroupPath, int] = {}
        self._floor = 0
        # watches are per user: root's are shared with systemd and every other root
        # daemon, so the daemon takes at most half of them (None: read the sysctl)
        self.budget = budget if budget is not None else ino.max_user_watches() // 2
        self.inotify: ino.Inotify | None = None
        try:
            self.inotify = make_inotify()
        except OSError as exc:
            self._off(f"inotify: {exc}")

    # -- the loop's side ------------------------------------------------------------------
    def fileno(self) -> int:
        """The fd for the loop's poll set (-1: none).  It stays the same fd for the
        daemon's life, also once the watches are off (it is quiet then)."""
        return self.inotify.fileno() if self.inotify is not None else -1

    def pump(self) -> bool:
        """Read one batch of events; True when the daemon should rescan (a cgroup came
        or went, a directory's xattrs or owner changed, a followed limit was written,
        events were lost), also for a batch :meth:`mark` read first."""
        wanted, self.stashed = self._pump() or self.stashed, False
        return wanted

    def _pump(self) -> bool:
        if self.inotify is None:
            return False
        try:
            events = self.inotify.read()
        except OSError as exc:
            self._off(f"read: {exc}")
            return True
        self.stats["events"] += len(events)
        wanted = False
        for ev in events:
            wanted |= self._event(ev)
        return wanted

    def _event(self, ev: ino.Event) -> bool:
        if ev.mask & ino.IN_Q_OVERFLOW:
            self.stats["overflows"] += 1
            self._walk_due = True
            self._note(None)
            return True
        if self.off_reason is not None:
            return False
        limit_of = self._file_wds.get(ev.wd)
        if limit_of is not None:
            if ev.mask & ino.IN_IGNORED:
                del self._file_wds[ev.wd]
                return False
            return bool(ev.mask & ino.IN_MODIFY)
        cg = self._dir_of.get(ev.wd)
        if cg is None:
            return False
        if ev.mask & ino.IN_IGNORED:  # removed (its parent's IN_DELETE says so too)
            self._drop(cg)
            self._note(cg)
            return True
        if not ev.name:
            if ev.mask & ino.IN_ATTRIB:
                self._pending.changed.add(cg)
                self._note(cg)
                return True
            return False
        if not ev.mask & ino.IN_ISDIR:
            return False
        try:
            child = cg.child(ev.name)
        except ValueError:
            return False
        if ev.mask & (ino.IN_DELETE | ino.IN_MOVED_FROM):
            self._drop(child)
            self._note(child)
            return True
        if ev.mask & (ino.IN_CREATE | ino.IN_MOVED_TO):
            self._add_subtree(child)
            self._note(child)
            return True
        return False

    def _note(self, cg: CgroupPath | None) -> None:
        self.serial += 1
        if cg is None:
            self._floor = self.serial
            self._changed.clear()
            return
        self._changed.pop(cg, None)
        self._changed[cg] = self.serial
        if len(self._changed) > RECENT:
            self._changed = coarsened(self._changed, RECENT // 2)

    def mark(self, top: CgroupPath) -> int | None:
        """A number that changes whenever a cgroup is made or removed in ``top``'s
        subtree (or above it: a removed ancestor) or one's xattrs (badness, delay) or
        owner change: the daemon's standing plan stands while it is the same.  None
        when that cannot be told: the watches are off, or events are queued that the
        loop has not read yet.  Beyond :data:`RECENT` changed cgroups, a change is
        remembered as one of an ancestor (:func:`coarsened`): the marks of that
        ancestor's subtree move with it, never a mark that should stand still; a plan
        is chosen again, never kept wrongly."""
        if self.inotify is None or self.off_reason is not None:
            return None
        if self.inotify.pending():
            # e.g. the daemon's own write of a valve's memory.high (its lower step,
            # daemon/valve.py), just before a plan is chosen: read them here; the loop
            # rescans for them all the same (stashed)
            self.stashed |= self._pump()
            if self.inotify.pending():
                return None
        for cg in reversed(self._changed):  # the newest first (all after the floor)
            if top.contains(cg) or cg.contains(top):
                return self._changed[cg]
        return self._floor

    # -- the rescan's side ----------------------------------------------------------------
    def refresh(self, pulse: Callable[[], None] = lambda: None) -> Pass:
        """The pass of this rescan (:attr:`current`): a walk when one is due, otherwise
        what the events said since the last one.  Called once per rescan, first."""
        self.pump()  # what is queued belongs to this pass
        if self.inotify is None or self.off_reason is not None:
            p = self._walk(pulse, watch=False, why="no_watches")
        elif self._walk_due or self.clock() >= self._next_full:
            why = "safety_net" if not self._walk_due else "events_lost" if self.inodes else "start"
            p = self._walk(pulse, watch=True, why=why)
        else:
            p, self._pending = self._pending, Pass(False)
        self.current = p
        return p

    def walk_due(self) -> bool:
        """True: the next :meth:`refresh` walks the whole tree."""
        if self.inotify is None or self.off_reason is not None:
            return True
        return self._walk_due or self.clock() >= self._next_full

    def _walk(self, pulse: Callable[[], None], watch: bool, why: str) -> Pass:
        self.stats["walks"] += 1
        if self.debug is not None:  # (the loop holds these back during an episode)
            self.debug("tree_walk", self.root, {"why": why, "walks": self.stats["walks"]})
        self._pending = Pass(False)
        self._walk_due = False
        found: dict[CgroupPath, int] = {}
        for n, (cg, st, _) in enumerate(self.fs.walk_nodes(self.root)):
            if n % PULSE_EVERY == PULSE_EVERY - 1:
                pulse()  # a long walk is work, not a hang
            found[cg] = st.st_ino
            if watch and self.off_reason is None:
                self._watch_dir(cg, st.st_ino)
        if watch and self.off_reason is None:
            for cg in [c for c in self._wd_of if c not in found]:
                self._drop(cg)
            self._pending = Pass(False)  # the walk saw it all
        self.inodes = found
        self._next_full = self.clock() + self.full_every
        return Pass(True, created=dict(found))

    def managed(
        self, delay_of: Callable[[CgroupPath], int | None], pulse: Callable[[], None]
    ) -> dict[Scope, int]:
        """The cgroups with a delay (the ports' managed set), from this rescan's pass:
        every cgroup's delay read after a walk, only the changed ones' otherwise."""
        p = self.current if self.current is not None else self.refresh(pulse)
        self.current = None  # consumed: the next rescan refreshes
        self.last = p
        if p.full:
            self._delays = {}
            todo: list[CgroupPath] = list(p.created)
        else:
            for cg in p.removed:
                self._delays.pop(cg, None)
            todo = sorted(p.changed)
            # an owner changed above a user.* delay (delegation): read those again too
            todo += [m for m in self._delays if m not in p.changed and _below(m, p.changed)]
        for n, cg in enumerate(todo):
            if n % PULSE_EVERY == PULSE_EVERY - 1:
                pulse()
            if cg.is_root:
                continue  # the root has no limit to hold; the host is --host-delay
            delay = delay_of(cg)
            if delay is None:
                self._delays.pop(cg, None)
            else:
                self._delays[cg] = delay
        out: dict[Scope, int] = {cg: d for cg, d in self._delays.items()}
        # A managed cgroup removed and made again within one pass (a unit restarting):
        # the daemon still holds the old one's fds.  Left out once, it is released; the
        # next rescan (soon: wants_rescan) takes the new one over.
        for cg in p.recreated:
            if out.pop(cg, None) is not None:
                self._pending.changed.add(cg)
                self._again = True
        return out

    def wants_rescan(self) -> bool:
        """True (once) when the last managed set left a re-created cgroup out."""
        again, self._again = self._again, False
        return again

    # -- the limit files of the managed memcgs -----------------------------------------
    def follow(self, key: Scope, cg: CgroupPath, version: int) -> None:
        """Watch cg's limit files (IN_MODIFY) for the managed memcg ``key``."""
        if self.inotify is None or self.off_reason is not None or key in self._followed:
            return
        wds = []
        for name in V2_LIMIT_FILES if version == 2 else V1_LIMIT_FILES:
            if self._over_budget():
                return
            try:
                wd = self.inotify.add(f"{self.fs.path(cg)}/{name}", FILE_MASK)
            except ino.WatchLimit as exc:
                self._off(str(exc))
                return
            except (OSError, Vanished):
                continue  # gone, or no such file (a root-level limit): nothing to watch
            self._file_wds[wd] = cg
            wds.append(wd)
        self._followed[key] = wds

    def unfollow(self, key: Scope) -> None:
        for wd in self._followed.pop(key, []):
            if self._file_wds.pop(wd, None) is not None and self.inotify is not None:
                self.inotify.remove(wd)

    def close(self) -> None:
        if self.inotify is not None:
            self.inotify.close()
            self.inotify = None

    # -- bookkeeping ----------------------------------------------------------------------
    def _over_budget(self) -> bool:
        if len(self._dir_of) + len(self._file_wds) < self.budget:
            return False
        self._off(
            f"more than {self.budget} watches needed: half of fs.inotify.max_user_watches, "
            "which root's other daemons share"
        )
        return True

    def _watch_dir(self, cg: CgroupPath, inode: int) -> bool:
        assert self.inotify is not None
        if cg not in self._wd_of and self._over_budget():
            return False
        try:
            wd = self.inotify.add(self.fs.dir_path(cg), DIR_MASK)
        except ino.WatchLimit as exc:
            self._off(str(exc))
            return False
        except (OSError, Vanished) as exc:
            if isinstance(exc, Vanished) or exc.errno in (errno.ENOENT, errno.ENOTDIR):
                return False  # removed meanwhile: its parent's IN_DELETE follows
            self._off(f"{cg}: {exc}")  # e.g. a path too long to watch
            return False
        old = self._wd_of.get(cg)
        if old is not None and old != wd:
            self._dir_of.pop(old, None)  # a re-created cgroup of the same name
        self._wd_of[cg] = wd
        self._dir_of[wd] = cg
        self.inodes[cg] = inode
        parent = cg.parent
        if parent is not None and cg != self.root:
            self._kids.setdefault(parent, set()).add(cg)
        return True

    def _add_subtree(self, top: CgroupPath) -> None:
        """A new cgroup: watch it, then list it (what was made in it before the watch
        took is found by the listing; what comes after, by the watch)."""
        stack = [top]
        while stack and self.off_reason is None:
            cg = stack.pop()
            try:
                st, kids = self.fs.node(cg)
            except Vanished:
                continue
            if not self._watch_dir(cg, st.st_ino):
                continue
            if cg in self._pending.removed:
                self._pending.removed.discard(cg)
                self._pending.recreated.add(cg)
            self._pending.created[cg] = st.st_ino
            self._pending.changed.add(cg)
            stack.extend(k for k in kids if k not in self._wd_of)

    def _drop(self, top: CgroupPath) -> None:
        """A removed cgroup and everything known below it."""
        stack = [top]
        while stack:
            cg = stack.pop()
            stack.extend(self._kids.pop(cg, ()))
            wd = self._wd_of.pop(cg, None)
            if wd is not None:
                self._dir_of.pop(wd, None)
                if self.inotify is not None:
                    self.inotify.remove(wd)  # EINVAL when the kernel dropped it: fine
            self.inodes.pop(cg, None)
            self._pending.created.pop(cg, None)
            self._pending.changed.discard(cg)
            self._pending.removed.add(cg)
        parent = top.parent
        if parent is not None:
            kids = self._kids.get(parent)
            if kids is not None:
                kids.discard(top)

    def _off(self, reason: str) -> None:
        """No more watches: a walk per rescan from now on (said once)."""
        if self.off_reason is not None:
            return
        self.off_reason = reason
        self._note(None)
        watches = len(self._wd_of) + len(self._file_wds)
        if self.inotify is not None:
            for wd in [*self._dir_of, *self._file_wds]:
                self.inotify.remove(wd)
        self._wd_of.clear()
        self._dir_of.clear()
        self._file_wds.clear()
        self._followed.clear()
        self._kids.clear()
        self.report(
            "tree_watch_off",
            self.root,
            {"reason": reason, "watches": watches, "fallback": "a walk of the tree per rescan"},
        )


def touched(p: Pass | None, top: CgroupPath) -> bool:
    """Whether ``top``'s subtree may hold something new in pass ``p`` (None: no pass, a
    walk per rescan): a walk, or a cgroup made there or whose xattrs or owner changed."""
    if p is None or p.full:
        return True
    return any(top.contains(cg) for cg in (*p.created, *p.changed))


def _below(cg: CgroupPath, tops: set[CgroupPath]) -> bool:
    return any(a in tops for a in cg.ancestors())


def coarsened(changed: dict[CgroupPath, int], keep: int) -> dict[CgroupPath, int]:
    """``changed`` (cgroup -> its last change's number) in at most ``keep`` entries,
    oldest first: the deepest cgroups' changes become changes of their parents (the
    newest number kept), level by level.  A mark reads a change of ``c`` for every
    domain in ``c``'s subtree or above it; a parent's covers both, so no mark that
    should move stands still.  The root's entry covers every domain."""
    out = dict(changed)
    while len(out) > keep:
        deepest = max(c.depth for c in out)
        if deepest == 0:
            break  # the root alone
        up: dict[CgroupPath, int] = {}
        for c, n in out.items():
            p = c.parent if c.depth == deepest else c
            assert p is not None
            up[p] = max(up.get(p, 0), n)
        out = up
    return dict(sorted(out.items(), key=lambda kv: kv[1]))
