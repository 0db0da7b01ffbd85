"""The valve's arithmetic (memcgctl/daemon/valve.py): pure functions over numbers."""

from __future__ import annotations

import pytest

from memcgctl.daemon.valve import (
    CLEAR,
    CRITICAL,
    MAX_POLL,
    MIB,
    MIN_POLL,
    RECOVERED,
    SHORT,
    HostLines,
    committed,
    headroom,
    high_to_write,
    host_available,
    host_level,
    host_poll_interval,
    lines,
    memcg_level,
)


def test_headroom_is_a_share_with_a_floor_and_a_ceiling() -> None:
    assert headroom(256 * MIB, 0.10) == int(256 * MIB * 0.10)
    assert headroom(16 * MIB, 0.10) == 4 * MIB  # at least 4 MiB
    assert headroom(6 * MIB, 0.10) == 3 * MIB  # never more than half the limit


def test_lines_are_ordered_below_the_limit() -> None:
    ln = lines(256 * MIB, 0.10)
    assert ln.recovery_line < ln.line < ln.freeze_line < ln.limit
    room = headroom(ln.limit, 0.10)
    assert ln.line == (ln.limit - room) // 4096 * 4096  # memory.high is in whole pages
    assert ln.freeze_line == ln.limit - room // 4
    assert ln.recovery_line == ln.line - room // 2


def test_the_lower_memory_high_wins() -> None:
    assert high_to_write(None, 200) == 200  # memory.high max: the valve
    assert high_to_write(300, 200) == 200
    assert high_to_write(150, 200) is None  # the user's own is lower: keep it


def test_committed_leaves_out_page_cache_and_what_swap_can_take() -> None:
    stat = {"anon": 100 * MIB, "active_file": 30 * MIB, "inactive_file": 20 * MIB}
    assert committed(160 * MIB, stat, 0) == 110 * MIB
    assert committed(160 * MIB, stat, 40 * MIB) == 70 * MIB
    assert committed(160 * MIB, stat, 1 << 40) == 10 * MIB  # swap takes all the anon
    assert committed(10 * MIB, stat, 0) == 0


@pytest.mark.parametrize(
    ("used_mib", "expected"),
    [(100, RECOVERED), (220, CLEAR), (231, SHORT), (250, CRITICAL), (256, CRITICAL)],
)
def test_memcg_level(used_mib: int, expected: str) -> None:
    ln = lines(256 * MIB, 0.10)  # line 230.4 MiB, freeze 249.6, recovery 217.6
    assert memcg_level(used_mib * MIB, ln) == expected


def test_host_level_and_polling() -> None:
    hl = HostLines(short=0.10, critical=0.04, recovered=0.15)
    avail, total = host_available({"MemTotal": 1000, "MemAvailable": 80, "SwapFree": 0})
    assert (avail, total) == (80 * 1024, 1000 * 1024)
    assert host_level(avail, total, hl) == SHORT
    assert host_level(30 * 1024, total, hl) == CRITICAL
    assert host_level(120 * 1024, total, hl) == CLEAR
    assert host_level(500 * 1024, total, hl) == RECOVERED
    # faster as memory runs out, within bounds
    big = 64 << 30
    assert host_poll_interval(big, big, hl) == MAX_POLL
    assert host_poll_interval(0, big, hl) == MIN_POLL
    near = host_poll_interval(int(big * 0.06), big, hl)
    far = host_poll_interval(int(big * 0.2), big, hl)
    assert MIN_POLL < near < far <= MAX_POLL
