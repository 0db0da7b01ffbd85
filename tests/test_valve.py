"""The valve's arithmetic (memcgctl/daemon/valve.py): pure functions over numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from memcgctl.daemon.valve import (
    CLEAR,
    CRITICAL,
    FILL_RATE,
    IDLE_MIN_POLL,
    MAX_POLL,
    MIB,
    MIN_POLL,
    RATE_SAFETY,
    RECOVERED,
    SHORT,
    UNSEEN_FILL_RATE,
    HostLines,
    HostRate,
    OomLevel,
    committed,
    headroom,
    high_to_write,
    host_available,
    host_available_of,
    host_level,
    host_poll_interval,
    lines,
    memcg_level,
)
from memcgctl.kernel.procfs import ProcFs


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
def test_memcg_level(used_mib: int, expected: OomLevel) -> None:
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


GUEST = 1000 * MIB  # a 1 GiB guest's MemTotal, roughly


def test_idle_host_polls_no_faster_than_earlyoom() -> None:
    """Above the short line with no growth seen: at most every 100 ms, slower with room."""
    hl = HostLines(short=0.10, critical=0.04, recovered=0.15)
    empty = host_poll_interval(900 * MIB, GUEST, hl)
    loaded = host_poll_interval(310 * MIB, GUEST, hl)  # 69 % used
    near = host_poll_interval(101 * MIB, GUEST, hl)  # just above the short line
    assert empty == MAX_POLL
    assert loaded == pytest.approx(210 * MIB / UNSEEN_FILL_RATE)
    assert near == IDLE_MIN_POLL
    assert IDLE_MIN_POLL < loaded < empty


def test_growth_seen_brings_the_next_look_before_the_short_line() -> None:
    hl = HostLines(short=0.10, critical=0.04, recovered=0.15)
    rate = 200 * MIB  # 1 MiB every 5 ms
    interval = host_poll_interval(130 * MIB, GUEST, hl, rate)
    assert interval == pytest.approx(30 * MIB / (rate * RATE_SAFETY))
    assert interval < IDLE_MIN_POLL  # the margin demands it
    # at that rate the line is crossed after 150 ms: the look comes well before
    assert interval * rate < 30 * MIB
    # with more room the growth seen does not push below 100 ms
    assert host_poll_interval(150 * MIB, GUEST, hl, rate) >= IDLE_MIN_POLL
    # slow growth far from the line changes nothing
    assert host_poll_interval(900 * MIB, GUEST, hl, 1 * MIB) == MAX_POLL
    # never faster than MIN_POLL
    assert host_poll_interval(100 * MIB + 4096, GUEST, hl, 100_000 * MIB) == MIN_POLL


def test_below_the_short_line_polls_by_the_critical_margin() -> None:
    hl = HostLines(short=0.10, critical=0.04, recovered=0.15)
    interval = host_poll_interval(70 * MIB, GUEST, hl)  # an episode: 30 MiB to critical
    assert interval == pytest.approx(30 * MIB / FILL_RATE)
    assert MIN_POLL < interval < IDLE_MIN_POLL


def test_host_rate_follows_the_fall_and_forgets_slowly() -> None:
    r = HostRate()
    assert r.update(0.0, 500 * MIB) == 0.0  # one look: no rate yet
    assert r.update(0.1, 480 * MIB) == pytest.approx(200 * MIB)
    assert r.update(0.105, 400 * MIB) == pytest.approx(200 * MIB)  # too close: kept
    assert r.update(0.2, 480 * MIB) == pytest.approx(100 * MIB)  # no fall: halves
    assert r.update(0.3, 480 * MIB) == pytest.approx(50 * MIB)
    for i in range(40):
        r.update(0.4 + i / 10, 480 * MIB)
    assert r.rate == 0.0  # idle again: back to the idle interval


def test_meminfo_fields_by_search_match_the_full_parse(tmp_path: Path) -> None:
    """The host poll's cheap reader agrees with the full parse, on this host's real
    /proc/meminfo and on odd input (first line, missing key, no trailing newline)."""
    real = ProcFs(Path("/proc"))
    keys = ("MemTotal", "MemFree", "MemAvailable", "SwapTotal", "SwapFree")
    full = real.meminfo_kb()
    some = real.meminfo_kb_of(*keys)
    assert set(some) == {k for k in keys if k in full}
    assert some["MemTotal"] == full["MemTotal"]  # the one value that cannot move between reads
    (tmp_path / "meminfo").write_text("MemTotal:  1000 kB\nMemFreeX: 3 kB\nSwapFree: 7 kB")
    fake = ProcFs(tmp_path)
    assert fake.meminfo_kb_of(*keys) == {"MemTotal": 1000, "SwapFree": 7}


HOST_KEYS = ("MemTotal", "MemFree", "MemAvailable", "SwapTotal", "SwapFree")


def test_the_kept_meminfo_reader_matches_the_full_parse(tmp_path: Path) -> None:
    """The host poll's reader (one pread of a kept fd, a search per field) agrees with
    the full parse on this host's real /proc/meminfo, again on each read."""
    real = ProcFs(Path("/proc"))
    reader = real.meminfo_fields(*HOST_KEYS)
    try:
        for _ in range(3):
            got = dict(zip(HOST_KEYS, reader.read(), strict=True))
            full = real.meminfo_kb()
            assert {k for k, v in got.items() if v >= 0} == {k for k in HOST_KEYS if k in full}
            assert got["MemTotal"] == full["MemTotal"]  # the one that cannot move meanwhile
            assert got["SwapTotal"] == full.get("SwapTotal", -1)
    finally:
        reader.close()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        # the first line, a near-miss name, a missing field, no trailing newline
        ("MemTotal:  1000 kB\nMemFreeX: 3 kB\nSwapFree: 7 kB", [1000, -1, -1, -1, 7]),
        # another order than the kernel's
        ("SwapFree: 7 kB\nMemAvailable: 5 kB\nMemTotal: 9 kB\n", [9, -1, 5, -1, 7]),
        # an unreadable value
        ("MemTotal: lots kB\nMemFree:\n", [-1, -1, -1, -1, -1]),
        # longer than the reader's first buffer
        ("Pad: 1 kB\n" * 2000 + "MemTotal: 4 kB\nSwapFree: 2 kB\n", [4, -1, -1, -1, 2]),
    ],
)
def test_the_kept_meminfo_reader_on_odd_input(tmp_path: Path, text: str, want: list[int]) -> None:
    (tmp_path / "meminfo").write_text(text)
    reader = ProcFs(tmp_path).meminfo_fields(*HOST_KEYS)
    try:
        assert reader.read() == want
        assert reader.read() == want  # read again, from the start
        (tmp_path / "meminfo").write_text("MemTotal: 8 kB\nMemAvailable: 1 kB\n")
        assert reader.read() == [8, -1, 1, -1, -1]  # rewritten in place: seen
    finally:
        reader.close()
    assert host_available_of(8, -1, 1, -1, -1) == (1024, 8 * 1024)
    assert host_available_of(8, 3, -1, 4, 2) == (5 * 1024, 12 * 1024)  # no MemAvailable


def test_near_the_line() -> None:
    """Where the daemon keeps a standing plan (issue 22): v2 within one headroom below
    the valve, v1 within an eighth of the limit, the host below short + (short −
    critical) of its memory."""
    from memcgctl.daemon.valve import MIB, HostLines, host_near, lines, memcg_near, v1_near

    ln = lines(1000 * MIB, 0.10)  # the valve at 900 MiB, 100 MiB of headroom
    assert not memcg_near(800 * MIB - 1, ln) and memcg_near(800 * MIB, ln)
    assert v1_near(875, 1000) and not v1_near(874, 1000)
    hl = HostLines(short=0.10, critical=0.04)
    assert host_near(159, 1000, hl) and not host_near(160, 1000, hl)


def test_the_lower_step_sits_at_the_near_line_in_whole_pages() -> None:
    """delay 0 on v2: memory.high one headroom below the valve while far from it, so the
    kernel's high event there says "near" (where memcg_near begins)."""
    from memcgctl.daemon.valve import PAGE, low_high, memcg_near

    ln = lines(1000 * MIB, 0.10)
    low = low_high(ln)
    assert low is not None and low % PAGE == 0
    assert memcg_near(low, ln) and low > ln.line - (ln.limit - ln.line) - PAGE
    ln = lines(256 * MIB, 0.10)
    assert low_high(ln) == (2 * ln.line - ln.limit) // PAGE * PAGE
    # a small limit: the 4 MiB minimum headroom would put the step below half of it
    assert low_high(lines(12 * MIB, 0.10)) is None
    assert low_high(lines(16 * MIB, 0.10)) == 8 * MIB  # 16 - 2 * 4 MiB: just half


def test_the_lower_step_is_raised_at_once_and_lowered_with_hysteresis() -> None:
    from memcgctl.daemon.valve import low_high, lowered_next

    ln = lines(1000 * MIB, 0.10)  # valve 900 MiB, step 800 MiB, lowered below 750 MiB
    low = low_high(ln)
    assert low is not None
    half = (ln.limit - ln.line) // 2
    assert lowered_next(0, ln, low, lowered=False)
    assert lowered_next(low - 1, ln, low, lowered=True)  # below the step: stays there
    assert not lowered_next(low, ln, low, lowered=True)  # its high event: raised
    assert not lowered_next(low - 1, ln, low, lowered=False)  # hovering: stays raised
    assert not lowered_next(low - half, ln, low, lowered=False)
    assert lowered_next(low - half - 1, ln, low, lowered=False)  # well below: lowered
