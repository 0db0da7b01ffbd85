"""The kernel heuristic (mm/oom_kill.c oom_badness, select_bad_process) on hand-built
snapshots: points, totalpages, skip rules, scan order and the tie rule."""

from __future__ import annotations

from typing import Any

import pytest

from memcgctl.logic.kernelheuristic import (
    host_totalpages,
    memcg_totalpages,
    scan_order,
    score,
    select_kernel,
)
from memcgctl.render.reasontext import caveat_lines, reason_lines, reason_text
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.model import CgroupInfo, KernelParams
from memcgctl.vocab.reasons import Caveat, PointsTie, ScoredCount
from tests.procscore import proc_oom_score
from tests.snapbuild import P, build

MIB = 1 << 20
GIB_KB = 1 << 20


def params(
    version: int = 1, mem_kb: int = 16 * GIB_KB, swap_kb: int = 0, **kw: Any
) -> KernelParams:
    return KernelParams(
        page_size=4096, mem_total_kb=mem_kb, swap_total_kb=swap_kb, version=version, **kw
    )


def test_points_sum_rss_swap_pagetables_and_adj() -> None:
    p = P(10, "/", rss=4000, file=400, shmem=40, swap=80, pte=12, adj=0).info()
    s = score(p, 100_000, params())
    # kB / 4 per page; VmPTE kB * 1024 / page size
    assert (s.rss_pages, s.swap_pages, s.pgtable_pages) == (1000 + 100 + 10, 20, 3)
    assert s.points == 1133


@pytest.mark.parametrize(
    ("adj", "totalpages", "expected_adj_pages"),
    [
        (100, 51_200, 100 * 51),  # division first: 51200 // 1000 = 51
        (-300, 51_200, -300 * 51),  # may go negative
        (500, 999, 0),  # totalpages < 1000: adj does nothing
        (1000, 1_000_000, 1_000_000),
    ],
)
def test_adj_uses_integer_totalpages_per_mille(
    adj: int, totalpages: int, expected_adj_pages: int
) -> None:
    s = score(P(10, "/", rss=400, adj=adj).info(), totalpages, params())
    assert s.adj_pages == expected_adj_pages
    assert s.points == 100 + expected_adj_pages


def test_host_totalpages_is_ram_plus_swap() -> None:
    assert host_totalpages(params(mem_kb=8 * GIB_KB, swap_kb=2 * GIB_KB)) == (10 << 30) // 4096


def _cg(**kw: Any) -> CgroupInfo:
    base: dict[str, Any] = {
        "path": "/j",
        "usage_bytes": 0,
        "limit_bytes": 256 * MIB,
        "badness": 500,
        "badness_source": "default",
        "oom_delay_ms": None,
        "oom_delay_source": "default",
        "oom_group": None,
        "under_oom": None,
        "oom_kill_disable": None,
        "pids": (),
        "children": (),
    }
    base.update(kw)
    return CgroupInfo(**base)


LIMIT_PAGES = 256 * MIB // 4096
SWAP_KB = 1 * GIB_KB  # 262144 pages


@pytest.mark.parametrize(
    ("version", "cg", "swappiness", "expected"),
    [
        # v1, memsw unlimited: + all swap (memsw max - max is huge, capped by total swap)
        (1, _cg(swap_limit_bytes=None, swappiness=60), 60, LIMIT_PAGES + SWAP_KB // 4),
        # v1 with memsw limit: memsw - mem
        (1, _cg(swap_limit_bytes=64 * MIB, swappiness=60), 60, LIMIT_PAGES + 64 * MIB // 4096),
        # v1, memcg swappiness 0: no swap, whatever vm.swappiness says
        (1, _cg(swap_limit_bytes=64 * MIB, swappiness=0), 60, LIMIT_PAGES),
        # v1: the memcg's own swappiness counts, not the global one
        (1, _cg(swap_limit_bytes=64 * MIB, swappiness=10), 0, LIMIT_PAGES + 64 * MIB // 4096),
        # v2: memory.swap.max, capped by the host's swap
        (2, _cg(swap_limit_bytes=128 * MIB), 60, LIMIT_PAGES + 128 * MIB // 4096),
        (2, _cg(swap_limit_bytes=8 << 30), 60, LIMIT_PAGES + SWAP_KB // 4),
        (2, _cg(swap_limit_bytes=0), 60, LIMIT_PAGES),
        # v2 has no per-memcg swappiness: vm.swappiness 0 means no swap
        (2, _cg(swap_limit_bytes=None), 0, LIMIT_PAGES),
        # a zero limit counts as 1
        (2, _cg(limit_bytes=0, swap_limit_bytes=0), 60, 1),
    ],
)
def test_memcg_totalpages(version: int, cg: CgroupInfo, swappiness: int, expected: int) -> None:
    p = params(version=version, swap_kb=SWAP_KB, vm_swappiness=swappiness)
    assert memcg_totalpages(cg, p) == expected


def test_memcg_totalpages_without_swap_on_host() -> None:
    p = params(version=1, swap_kb=0)
    assert memcg_totalpages(_cg(swap_limit_bytes=None, swappiness=60), p) == LIMIT_PAGES


def test_unlimited_memcg_falls_back_to_host_totalpages() -> None:
    p = params(version=2, mem_kb=4 * GIB_KB)
    assert memcg_totalpages(_cg(limit_bytes=None), p) == host_totalpages(p)


def test_skip_rules() -> None:
    snap = build(
        {"/j": {"limit": 256 * MIB}},
        [
            P(1, "/j", rss=10**6),  # init
            P(10, "/j", rss=10**6, adj=-1000),
            P(11, "/j", rss=10**6, killable=False),  # kernel thread / no mm
            P(12, "/j", rss=4),
        ],
        version=1,
    )
    d = select_kernel(snap, CgroupPath("/j"), params())
    assert d.victim is not None and d.victim.pid == 12
    assert [s.process.pid for s in d.candidates] == [12]
    assert d.reasons[1] == ScoredCount(1, 3)
    assert "3 never eligible" in reason_text(d.reasons[1])


def test_negative_points_can_still_be_chosen() -> None:
    snap = build({"/j": {"limit": 256 * MIB}}, [P(12, "/j", rss=4, adj=-999)], version=1)
    d = select_kernel(snap, CgroupPath("/j"), params())
    assert d.victim is not None and d.points is not None and d.points < 0


def test_adj_can_outweigh_size() -> None:
    # 65536 pages limit -> 65 pages per adj point; adj 200 = 13000 pages > 40 MiB
    snap = build(
        {"/j": {"limit": 256 * MIB}, "/j/a": {}, "/j/b": {}},
        [P(10, "/j/a", rss=40 * 1024), P(11, "/j/b", rss=1024, adj=200)],
        version=1,
    )
    d = select_kernel(snap, CgroupPath("/j"), params())
    assert d.victim is not None and d.victim.pid == 11
    assert d.totalpages == LIMIT_PAGES
    assert d.candidates[0].adj_pages == 200 * (LIMIT_PAGES // 1000)


def test_tie_goes_to_the_last_scanned_memcg_preorder_creation_order() -> None:
    # children created z first, then a: the kernel visits /j, /j/z, /j/z/deep, /j/a
    snap = build(
        {
            "/j": {"limit": 256 * MIB},
            "/j/z": {"ino": 5},
            "/j/z/deep": {"ino": 7},
            "/j/a": {"ino": 9},
        },
        [
            P(30, "/j/z", rss=400),
            P(20, "/j/a", rss=400),
            P(25, "/j/z/deep", rss=400),
            P(40, "/j", rss=400),
        ],
        version=1,
    )
    order = [p.pid for p in scan_order(snap, CgroupPath("/j"))]
    assert order == [40, 30, 25, 20]
    d = select_kernel(snap, CgroupPath("/j"), params())
    assert d.victim is not None and d.victim.pid == 20
    assert [s.process.pid for s in d.candidates] == [20, 25, 30, 40]
    assert PointsTie(25, d.points or 0) in d.reasons
    assert any("scans last" in r for r in reason_lines(d.reasons))


def test_tie_on_host_goes_to_the_highest_pid() -> None:
    snap = build({"/a": {}, "/b": {}}, [P(300, "/a", rss=800), P(200, "/b", rss=800)], version=1)
    d = select_kernel(snap, CgroupPath("/"), params())
    assert d.victim is not None and d.victim.pid == 300
    assert d.caveats[0] == Caveat.SCAN_ORDER_HOST
    assert "pid order" in caveat_lines(d.caveats)[0]


def test_host_oom_uses_ram_plus_swap() -> None:
    snap = build(
        {"/a": {"limit": 64 * MIB}},
        [P(10, "/a", rss=4, adj=10)],
        version=1,
        mem_total_kb=GIB_KB,
        swap_total_kb=GIB_KB,
    )
    p = KernelParams.of(snap, vm_swappiness=60)
    d = select_kernel(snap, CgroupPath("/"), p)
    assert d.totalpages == 2 * GIB_KB // 4
    assert d.points == 1 + 10 * (d.totalpages // 1000)


def test_oom_kill_allocating_task_is_a_caveat_for_host_ooms_only() -> None:
    snap = build({"/a": {"limit": 64 * MIB}}, [P(10, "/a", rss=4)], version=1)
    p = params(oom_kill_allocating_task=True)
    assert select_kernel(snap, CgroupPath("/"), p).caveats[0] == Caveat.ALLOCATING_TASK
    caveats = caveat_lines(select_kernel(snap, CgroupPath("/"), p).caveats)
    assert "oom_kill_allocating_task" in caveats[0]
    assert Caveat.ALLOCATING_TASK not in select_kernel(snap, CgroupPath("/a"), p).caveats


def test_group_kill_v2() -> None:
    snap = build(
        {"/svc": {"limit": 64 * MIB, "oom_group": True}, "/svc/w": {}},
        [P(10, "/svc/w", rss=900), P(11, "/svc", rss=1), P(12, "/svc", adj=-1000)],
    )
    d = select_kernel(snap, CgroupPath("/svc"), params(version=2))
    assert d.victim is not None and d.victim.pid == 10
    assert d.kill_group == "/svc" and d.group_pids == (10, 11)


def test_no_candidates() -> None:
    snap = build({"/j": {"limit": 64 * MIB}}, [P(10, "/j", adj=-1000)], version=1)
    d = select_kernel(snap, CgroupPath("/j"), params())
    assert d.victim is None and d.candidates == ()


@pytest.mark.parametrize(
    ("rss_kb", "adj", "expected"),
    [
        (0, 0, 666),  # (1000 + 0) * 2 / 3
        (4 * GIB_KB, 0, 833),  # a quarter of 16 GiB: (1000 + 250) * 2 / 3
        (4, -1000, 0),  # ineligible
        # totalpages 4194304: adj point = 4194 pages; C division truncates toward zero
        # (points*1000/total = -998.9 -> -998, so (1000 - 998) * 2 / 3 = 1; floor gives 0)
        (4, -999, 1),
        (4, -600, 267),  # -599.96 -> -599: 401 * 2 / 3
        (4, 1000, 1332),  # 4194001 pages -> 999: 1999 * 2 / 3
    ],
)
def test_proc_oom_score_formula(rss_kb: int, adj: int, expected: int) -> None:
    p = P(10, "/", rss=rss_kb, adj=adj).info()
    assert proc_oom_score(p, params(mem_kb=16 * GIB_KB)) == expected
