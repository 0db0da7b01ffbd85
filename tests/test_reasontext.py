"""The words for the policy's structured reasons (memcgctl.render.reasontext): each reason
reads exactly as predict-victim, explain-kill and the daemon's journal have always
printed it."""

from __future__ import annotations

import pytest

from memcgctl.render.reasontext import CAVEAT_TEXT, SKIP_TEXT, TIE_TEXT, reason_text, verdict_text
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.reasons import (
    Caveat,
    GroupKill,
    HostPages,
    LevelChoice,
    Lost,
    MemcgPages,
    MostPoints,
    NoKillableAt,
    NoKillableProcess,
    NoLimit,
    NotInSnapshot,
    PointsTie,
    Reason,
    ScoredCount,
    Skip,
    Tie,
    Verdict,
    Win,
)
from memcgctl.vocab.reportnotes import Said, note


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        (NotInSnapshot(CgroupPath("/x")), "/x: not in the snapshot"),
        (NoKillableAt(CgroupPath("/a")), "/a: no killable candidate"),
        (
            LevelChoice(CgroupPath("/"), 3, 4, "cgroup", CgroupPath("/a"), None, None, Win(100)),
            "/: 3 killable of 4 candidates; cgroup /a has the lowest badness (100)",
        ),
        (
            LevelChoice(
                CgroupPath("/a"), 2, 2, "process", None, 7, "sh", Win(5, True, Tie.LARGEST_RSS)
            ),
            "/a: 2 killable of 2 candidates; process pid 7 (sh) has the lowest badness (5), "
            "strictly lower than every sibling cgroup (tie on badness: the largest rss)",
        ),
        (
            GroupKill(CgroupPath("/svc"), 3),
            "/svc has memory.oom.group=1 (the highest such cgroup between the victim and "
            "the OOM root): all 3 of its processes die together, except oom_score_adj -1000 "
            "and init",
        ),
        (
            NoLimit(CgroupPath("/a"), 5000),
            "/a has no memory limit, so it cannot run out on its own; points use the host's "
            "RAM + swap (5000 pages)",
        ),
        (
            MemcgPages(CgroupPath("/j"), 256 << 20, 65536),
            "memcg OOM of /j: totalpages = limit 256.0M + allowed swap = 65536 pages, so "
            "each oom_score_adj point is worth 65 pages",
        ),
        (
            HostPages(2000),
            "host OOM: totalpages = RAM + swap = 2000 pages, so each oom_score_adj point is "
            "worth 2 pages",
        ),
        (
            ScoredCount(1, 3),
            "1 candidates scored, 3 never eligible (kernel threads, init, no mm, "
            "oom_score_adj -1000)",
        ),
        (
            NoKillableProcess(),
            "no killable process: the kernel would report 'no killable processes'",
        ),
        (
            MostPoints(9, "x", 110, 100, 5, 2, 3),
            "pid 9 (x) has the most points: 110 = rss 100 + swap 5 + page tables 2 + adj 3 pages",
        ),
        (
            PointsTie(25, 400),
            "tie with pid 25 at 400 points: the kernel keeps the one it scans last",
        ),
        (note(Said.NO_KILLABLE), "the kernel found no killable process"),
    ],
)
def test_reason_text(reason: Reason, text: str) -> None:
    assert reason_text(reason) == text


@pytest.mark.parametrize(
    ("verdict", "text"),
    [
        (Verdict(), ""),
        (Verdict(skip=Skip.ADJ_NEVER), "oom_score_adj -1000: never"),
        (Verdict(only=True), "chosen: the only killable candidate"),
        (
            Verdict(win=Win(100, tie=Tie.LOWEST_PID_INSIDE)),
            "chosen: lowest badness (100); tie on badness and usage: the one holding the "
            "lowest pid",
        ),
        (Verdict(lost=Lost.HIGHER_BADNESS, badness=500, chosen_badness=100), "badness 500 > 100"),
        (Verdict(lost=Lost.SMALLER_USAGE, usage_bytes=5), "same badness, smaller usage (usage 5B)"),
        (Verdict(lost=Lost.SMALLER_RSS, rss_kb=4), "same badness, smaller rss (rss 4.0K)"),
        (Verdict(lost=Lost.HIGHER_PID), "same badness and rss: higher pid"),
    ],
)
def test_verdict_text(verdict: Verdict, text: str) -> None:
    assert verdict_text(verdict) == text


def test_every_code_has_words() -> None:
    assert set(SKIP_TEXT) == set(Skip)
    assert set(TIE_TEXT) == set(Tie)
    assert set(CAVEAT_TEXT) == set(Caveat)
    for lost in Lost:
        assert verdict_text(Verdict(lost=lost))


def test_the_policy_builds_no_sentences() -> None:
    """The policies return codes and numbers; the units formatters (sizes in words) are
    the rendering layer's."""
    import pathlib

    import memcgctl.logic.decision as decision
    import memcgctl.logic.kernelheuristic as kernelheuristic
    import memcgctl.logic.priority as priority

    for path in (decision.__file__, priority.__file__, kernelheuristic.__file__):
        source = pathlib.Path(path).read_text(encoding="utf-8")
        assert "memcgctl.vocab.units" not in source and "format_" not in source
