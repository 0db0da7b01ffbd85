"""explain-kill on every real OOM report that has a task table (shared/data/oom-logs,
read at run time): the rebuilt kernel ranking puts the kernel's victim on top, every
candidate's points are the kernel's formula (mm/oom_kill.c oom_badness of that era,
written out here independently), and where the kernel printed its victim's score
(``Kill process N (comm) score S``, 2.6.36-4.18) the rebuilt score is that number.
"""

from __future__ import annotations

import pytest

from memcgctl.logic.logtext import read_lines
from memcgctl.logic.oomassembler import collect
from memcgctl.logic.oomtable import TaskRow
from memcgctl.logic.postmortem import KillExplanation, explain_report
from memcgctl.render.reasontext import reason_lines
from memcgctl.render.reportwords import note_lines
from tests.realdata import data_file

# file -> (verdict, the kernel's victim as a row of the table); written from each log
EXPLAINED: dict[str, tuple[str, int | None]] = {
    "boom_example_oomkill_el9.txt": ("matches", 3499662),
    "boom_exemple2_el9.txt": ("matches", 1040),
    "cadvisor_containerOomExampleLog.txt": ("matches", 13536),
    "cadvisor_systemOomExampleLog.txt": ("matches", 1532),
    "linux-oom-parser_nixos-linux-6.18.log": ("matches", 55817),
    "oomanalyser_example_archlinux_6_1_1.txt": ("matches", 473206),
    "oomanalyser_example_proxmox_cgroup_oom.txt": ("matches", 3902942),
    "oomanalyser_example_rhel7.txt": ("matches", 6576),
    "oomanalyser_example_ubuntu2110.txt": ("matches", 651),
    "out-of-memory_messages.1_el8.log": ("matches", 3117813),
    # RHEL 6: 2.6.36's normalised points; 14421 and 17406 both score 5, the first wins
    "out-of-memory_messages_el6.log": ("matches", 14421),
    "parseoom_messages_debian11.log": ("matches", 517),
    "excerpts/01-cadvisor-memcg-3.13.log": ("matches", 13536),
    "excerpts/02-cadvisor-global-3.13.log": ("matches", 1532),
    "excerpts/03-cadvisor-docker-4.8.log": ("matches", 1667),
    "excerpts/04-parseoom-global-5.10.log": ("matches", 517),
    "excerpts/05-boom-global-rhel9-5.14.log": ("matches", 1040),
    "excerpts/06-harvester-memcg-syslog-5.14.log": ("matches", 39079),
    "excerpts/07-harvester-memcg-dmesgT-5.3.log": ("matches", 70870),
    "excerpts/12-ltp-memcg-v1-5.8.log": ("matches", 19289),
    "excerpts/13-icloudnative-k8s-memcg-4.15.log": ("matches", 32308),
    "excerpts/14-blog-memcg-v2-dmesg-decode-5.14.log": ("matches", 1586608),
    "excerpts/21-bpf-oom-patch-custom-constraint-6.16.log": ("matches", 675),
    # a lone row grep'd out of the table
    "excerpts/24-stackoverflowgo-journal-grep-docker-v2-5.18.log": ("matches", 72184),
    # begins at the table header: no memcg limit line, totalpages from the printed score
    "excerpts/25-dcos-docs-memcg-journal-blanklines.log": ("matches", 16883),
    # begins inside the table; the victim's row is before the excerpt
    "excerpts/27-intelgfx-global-no-cpuset-5.8rc1.log": ("incomplete", None),
    "excerpts/30-linuxmm-fedora-comm-with-space-4.15.log": ("matches", 2279),
    # the kernel chose thread 12800 of process 12788
    "excerpts/31-blog-runc-vendor-el7-empty-constraint-3.10.log": ("matches", 12788),
}


def _explain(rel: str) -> KillExplanation:
    path = data_file("oom-logs/" + rel)
    report, kills = collect(read_lines([path.read_bytes()]), None, rel)
    assert report is not None and kills > 0, rel
    return explain_report(report)


def kernel_points(row: TaskRow, total: int, version: tuple[int, int], admin: bool) -> int:
    """oom_badness() as each era wrote it; ``admin``: CAP_SYS_ADMIN."""
    base = row.rss + row.swapents + row.pgtable_pages
    if version < (3, 8):  # 2.6.36-3.7: normalised to 0..1000
        p = base * 1000 // total - (30 if admin else 0) + row.oom_score_adj
        return min(max(p, 1), 1000)
    adj = row.oom_score_adj
    if admin and version < (3, 14):
        adj -= 30
    elif admin and version < (4, 17):
        base -= base * 3 // 100
    p = base + adj * (total // 1000)
    return 1 if version < (5, 9) and p <= 0 else p


@pytest.mark.parametrize("rel", sorted(EXPLAINED))
def test_explain_kill_rebuilds_the_kernel_ranking(rel: str) -> None:
    verdict, victim = EXPLAINED[rel]
    x = _explain(rel)
    assert x.verdict == verdict, (rel, x.why)
    d = x.decision
    total = d.totalpages
    assert total is not None and d.candidates, rel
    rows = {r.pid: r for r in x.report.tasks}
    for s in d.candidates:
        row = rows[s.process.pid]
        admin = x.rules.root_bonus is not None and row.uid == 0
        assert s.points == kernel_points(row, total, x.rules.version, admin), (rel, row)
    if victim is None:
        return
    assert d.victim is not None and d.victim.pid == victim, rel
    assert d.points == d.candidates[0].points
    if x.report.select is not None:  # the kernel's own number for its victim
        row = rows[victim]
        admin = x.rules.root_bonus is not None and row.uid == 0
        p = kernel_points(row, total, x.rules.version, admin)
        score = p if x.rules.version < (3, 8) else p * 1000 // total
        assert score == int(x.report.select["score"]), rel
        assert x.score_check is not None and x.score_check["agrees"], rel


def test_root_bonus_decided_by_the_printed_score() -> None:
    """A runc task is uid 0 without CAP_SYS_ADMIN (the container dropped it): on 3.10 the
    kernel printed 997 = 997 adj, no "adj -= 30"; explain-kill says so and scores it as
    the kernel did.  On 4.8 (docker) the same: the 3% bonus did not apply."""
    x = _explain("excerpts/31-blog-runc-vendor-el7-empty-constraint-3.10.log")
    assert x.rules.root_bonus is None
    assert x.decision.points == 784811  # not 761231 with the bonus: the numbers
    notes = " ".join(reason_lines(x.decision.reasons))
    assert "WITHOUT the root bonus" in notes
    x = _explain("excerpts/03-cadvisor-docker-4.8.log")
    assert x.rules.root_bonus is None and x.score_check == {
        "printed": 1003,
        "rebuilt": 1003,
        "agrees": True,
    }


def test_totalpages_from_the_printed_score_is_said() -> None:
    x = _explain("cadvisor_containerOomExampleLog.txt")  # memcg: host swap not printed
    notes = " ".join(reason_lines(x.decision.reasons))
    assert "totalpages from the kernel's printed score 996" in notes
    x = _explain("excerpts/25-dcos-docs-memcg-journal-blanklines.log")  # no limit line
    notes = " ".join(reason_lines(x.decision.reasons))
    assert "totalpages from the kernel's printed score 877" in notes
    assert "root bonus is assumed" in notes  # uid 0 and totalpages both unknown: said


def test_a_table_cut_short_is_said() -> None:
    x = _explain("excerpts/18-playpen-journal-ellipsized-6.8.log")  # journalctl's "..."
    assert x.verdict == "no_table" and "task table is cut short" in " ".join(note_lines(x.why))
