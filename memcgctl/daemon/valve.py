"""Where the daemon holds memory back, as pure arithmetic over numbers the ports read.

cgroup v2 has no ``oom_kill_disable``: once a charge fails at ``memory.max`` the kernel
kills within milliseconds.  The daemon therefore sets ``memory.high`` a *headroom*
below ``memory.max`` (the OOM valve).  Over ``memory.high`` the kernel reclaims and
throttles the allocating tasks (``mem_cgroup_handle_over_high``; the penalty grows with
the square of the overage *relative to memory.high*, so the headroom is a share of the
limit, not a fixed size) and raises a ``high`` event that wakes the daemon at once.

Lines, from the top (``limit`` = memory.max of the OOM domain):

* ``freeze_line`` = limit − headroom/4: throttling is being outrun; freeze the domain
  (``cgroup.freeze``) until the victim has died, so the kernel never reaches the limit;
* ``line`` = limit − headroom: the valve.  Committed memory at or above it is an OOM
  episode (``under_oom``);
* ``recovery_line`` = line − headroom/2: below it the domain has recovered, and the
  next OOM starts a new episode at round 1.

With delay 0 the victim is chosen ahead while the domain is *near* the valve (within
one headroom below it: daemon/choosing.py), and v2 gives no usage-threshold
notification to say so.  So a delay-0 valve has two steps: while memory.current is
well below the near line, memory.high sits *at* the near line (``low_high``), and the
kernel's ``high`` event there says "near"; the daemon then raises it to the valve at
once (the grower is throttled only for that wake-up) and chooses the victim.  Once
memory.current is back half a headroom below the near line, the valve is lowered again
(``lowered_next``).  The cost: one brief reclaim/throttle and one memory.high write per
upward crossing, one write per downward one.

*Committed* memory is what reclaim cannot take back: usage minus the file LRU pages
(page cache is reclaimed at memory.high long before an OOM) minus the anon pages that
swap still has room for.  A job that streams through page cache sits at memory.high
all day without ever being near an OOM; it never starts an episode.

The host has no limit to throttle at: its lines are shares of ``MemTotal`` compared with
``MemAvailable`` (+ ``SwapFree``), polled faster as memory runs out (as earlyoom does).
"""

from __future__ import annotations

from enum import Enum

from memcgctl.vocab.structs import NamedTuple, dataclass, field

MIB = 1 << 20


class OomLevel(Enum):
    """How close a managed memcg's OOM domain (or the host) is to an OOM."""

    CLEAR = "clear"  # above the valve's recovery line but not short (or v1: not under OOM)
    RECOVERED = "recovered"  # well below the valve: a new OOM is a new episode
    SHORT = "short"  # at the valve (v1: under OOM): an episode
    CRITICAL = "critical"  # throttling outrun: freeze (v2) or act now (host)


CLEAR = OomLevel.CLEAR
RECOVERED = OomLevel.RECOVERED
SHORT = OomLevel.SHORT
CRITICAL = OomLevel.CRITICAL


class Lines(NamedTuple):
    limit: int
    line: int
    freeze_line: int
    recovery_line: int


def headroom(limit: int, share: float, minimum: int = 4 * MIB) -> int:
    """The valve's distance below the limit: ``share`` of it, at least ``minimum``,
    at most half the limit."""
    return min(max(int(limit * share), minimum), limit // 2)


PAGE = 4096  # memory.high reads back rounded down to whole pages


def lines(limit: int, share: float) -> Lines:
    room = headroom(limit, share)
    line = (limit - room) // PAGE * PAGE
    return Lines(limit, line, limit - room // 4, line - room // 2)


def high_to_write(user_high: int | None, line: int) -> int | None:
    """What memory.high must be: the lower of the user's own and the valve; None when
    the user's is already at or below the valve (nothing to write)."""
    if user_high is not None and user_high <= line:
        return None
    return line


def low_high(ln: Lines) -> int | None:
    """The valve's lower step (delay 0): memory.high at the near line, one headroom
    below the valve, in whole pages; None where that would be below half the limit
    (a small limit: no lower step)."""
    low = (2 * ln.line - ln.limit) // PAGE * PAGE
    return low if low >= ln.limit // 2 else None


def lowered_next(usage: int, ln: Lines, low: int, lowered: bool) -> bool:
    """Whether the valve should sit at its lower step ``low`` after a look at
    memory.current: raised at once when usage reached it (the kernel's ``high`` event
    there), lowered again only once usage fell half a headroom below it (so a job
    that hovers there is not throttled at every turn, and the write never makes the
    writer reclaim)."""
    if lowered:
        return usage < low
    return usage < low - (ln.limit - ln.line) // 2


def committed(usage: int, stat: dict[str, int], swap_room: int) -> int:
    """Memory reclaim cannot give back: usage − file LRU − anon that fits in swap."""
    file_lru = stat.get("active_file", 0) + stat.get("inactive_file", 0)
    anon = stat.get("anon", 0)
    return max(usage - file_lru - min(anon, max(swap_room, 0)), 0)


def memcg_near(value: int, ln: Lines) -> bool:
    """Within one headroom below the valve (the daemon keeps its victim chosen there,
    so that a delay-0 kill at the valve is only a signal): the valve buys
    ``headroom`` of throttled growth, and as much again below it is where an OOM is
    one burst away."""
    return value >= ln.line - (ln.limit - ln.line)


def v1_near(committed_bytes: int, limit: int) -> bool:
    """v1: committed memory within an eighth of the limit (there is no valve: the
    limit itself is the line)."""
    return committed_bytes >= limit - limit // 8


def v1_committed(stat: dict[str, int], usage: int) -> int:
    """v1: usage less the page cache on the file LRU lists of its whole subtree."""
    return max(usage - stat.get("total_active_file", 0) - stat.get("total_inactive_file", 0), 0)


def memcg_level(value: int, ln: Lines) -> OomLevel:
    if value >= ln.freeze_line:
        return CRITICAL
    if value >= ln.line:
        return SHORT
    if value < ln.recovery_line:
        return RECOVERED
    return CLEAR


class HostLines(NamedTuple):
    """Shares of MemTotal (+ SwapTotal) that MemAvailable + SwapFree is compared with."""

    short: float = 0.10  # an episode starts below 10 % available
    critical: float = 0.04  # the delay is cut short below 4 %
    recovered: float = 0.15  # a new episode after recovering above 15 %


@dataclass(frozen=True)
class Tuning:
    headroom: float = 0.10  # v2 valve: share of memory.max
    freeze: bool = True  # v2: freeze the domain when throttling is outrun
    host: HostLines = field(default_factory=HostLines)
    psi_stall_us: int = 150_000
    psi_window_us: int = 1_000_000


def host_available(meminfo_kb: dict[str, int]) -> tuple[int, int]:
    """(available, total) in bytes: MemAvailable + SwapFree of MemTotal + SwapTotal."""
    get = meminfo_kb.get
    return host_available_of(
        *(get(k, -1) for k in ("MemTotal", "MemFree", "MemAvailable", "SwapTotal", "SwapFree"))
    )


def host_available_of(
    mem_total: int, mem_free: int, mem_available: int, swap_total: int, swap_free: int
) -> tuple[int, int]:
    """:func:`host_available` of the fields in kB (-1: missing), in /proc/meminfo's order."""
    avail = (mem_available if mem_available >= 0 else max(mem_free, 0)) + max(swap_free, 0)
    total = max(mem_total, 0) + max(swap_total, 0)
    return avail * 1024, max(total, 1) * 1024


def host_level(available: int, total: int, hl: HostLines) -> OomLevel:
    share = available / total
    if share < hl.critical:
        return CRITICAL
    if share < hl.short:
        return SHORT
    if share >= hl.recovered:
        return RECOVERED
    return CLEAR


def host_near(available: int, total: int, hl: HostLines) -> bool:
    """Available memory within the critical margin above the short line (short +
    (short − critical): 16 % with the default lines).  The critical margin is what an
    episode is given before its delay is cut short; as much above the short line is
    where the daemon keeps its victim chosen, and its adaptive poll (at most 100 ms
    apart there, closer when memory falls fast) refreshes the plan."""
    return available < total * (2 * hl.short - hl.critical)


# earlyoom's assumption: memory can fill at up to ~6 GB/s.  Below the short line (an
# episode) the daemon polls so that the gap to the critical line cannot be crossed
# between two looks, down to MIN_POLL.
FILL_RATE = 6000 * MIB
MIN_POLL = 0.002
MAX_POLL = 1.0
# Above the short line it polls no faster than the margin needs, like earlyoom and nohang
# (never faster than 100 ms): a PSI trigger wakes it between two looks when tasks stall,
# and growth it has seen shortens the interval so that the next look comes before the
# short line.  Growth faster than UNSEEN_FILL_RATE between two idle looks is left to PSI.
# 375 MiB/s (was 750): at 69 % of a 1 GiB guest used, a look every 0.56 s instead of
# 0.28 s; each look is a Python wake-up, the idle cost (issue 22: 2.2 → 1.15 % of a
# core there, earlyoom 0.7 %), and threshold → death was not worse in the same run
# (docs/benchmarks.md, peers).
IDLE_MIN_POLL = 0.1
UNSEEN_FILL_RATE = FILL_RATE // 16
RATE_SAFETY = 2.0  # assume the growth seen may double before the next look


def host_poll_interval(available: int, total: int, hl: HostLines, rate: float = 0.0) -> float:
    """Seconds until the next look at MemAvailable.  ``rate``: how fast available memory
    fell over the last looks (bytes/s, :class:`HostRate`)."""
    above_short = available - total * hl.short
    if above_short <= 0:
        margin = available - total * hl.critical
        return min(max(margin / FILL_RATE, MIN_POLL), MAX_POLL)
    interval = min(max(above_short / UNSEEN_FILL_RATE, IDLE_MIN_POLL), MAX_POLL)
    if rate > 0:  # the margin demands it: look again before the growth seen crosses it
        interval = min(interval, max(above_short / (rate * RATE_SAFETY), MIN_POLL))
    return interval


APPROACH_MIN_POLL = 0.05  # a memcg growing towards its near line: looked at no faster


def approach_poll(room: int, rate: float) -> float | None:
    """A memcg below its near line (``room`` bytes short of it) whose committed memory
    grew at ``rate`` bytes/s between the last looks: look again before the growth seen
    (doubled) crosses the line, 50 ms - 1 s; None when it is not growing (the next
    rescan looks)."""
    if rate <= 0 or room <= 0:
        return None
    return min(max(room / (rate * RATE_SAFETY), APPROACH_MIN_POLL), MAX_POLL)


class HostRate:
    """How fast available memory is falling, from successive looks: the fall since the
    previous look per second, or half the previous rate when that is higher (one quiet
    look does not forget a burst; a rise decays it)."""

    def __init__(self) -> None:
        self.last: tuple[float, int] | None = None
        self.rate = 0.0

    SPAN = 0.01  # looks closer together than this (a notification right after a poll)
    # measure nothing: a page or two of noise over microseconds is no rate

    def update(self, now: float, available: int) -> float:
        if self.last is not None and now - self.last[0] < self.SPAN:
            return self.rate
        if self.last is not None:
            seen = (self.last[1] - available) / (now - self.last[0])
            self.rate = max(seen, self.rate / 2, 0.0)
            if self.rate < 1.0:
                self.rate = 0.0
        self.last = (now, available)
        return self.rate
