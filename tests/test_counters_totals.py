"""The running kill totals (counters.json): rotation never lowers a counter, appends
deduplicate without reading the journal, rate-limited kills get their cgroup from the
kernel's counters, corrupt or foreign-boot totals are rebuilt, the exposition parses."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from memcgctl.cli import cli
from memcgctl.state import totals
from memcgctl.state.journal import Journal
from memcgctl.vocab.records import KernelEvent, UserKill
from tests.fakehost import FakeHost
from tests.promtext import parse_exposition

BTIME = 1_700_000_000
BOOT = "fake-boot-id"


def _host(host: FakeHost, kmsg: str = "6,1,1000,-;Linux version 6.x\n") -> FakeHost:
    host.cgroup("/a", oom_kill=0)
    host.cgroup("/a/job", oom_kill=0)
    host.cgroup("/b", oom_kill=0)
    (host.proc / "vmstat").write_text("oom_kill 0\n")
    (host.proc / "stat").write_text(f"cpu 1 2 3\nbtime {BTIME}\n")
    (host.base / "kmsg").write_text(kmsg)
    return host


def _run(host: FakeHost, *args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={**host.cli_env(), **env})


def _kill(seq: int, cg: str = "/a/job", boot: str = BOOT) -> KernelEvent:
    return {
        "time": f"2023-11-14T22:{13 + seq // 60000:02d}:{20 + (seq // 1000) % 40:02d}.{seq % 1000:06d}Z",
        "kind": "oom_kill",
        "cgroup": cg,
        "source": "kmsg",
        "dedup": f"{boot}:{seq}",
        "seq": seq,
        "pid": 1000 + seq,
        "comm": "grow",
        "constraint": "CONSTRAINT_MEMCG",
        "oom_memcg": cg,
        "anon_rss_kb": 32000,
    }


def _by_cause(host: FakeHost, cg: str = "/a", **env: str) -> dict[str, int]:
    r = _run(host, "counters", cg, "--json", **env)
    assert r.exit_code == 0, r.output
    by: dict[str, int] = json.loads(r.stdout)["cgroups"][0]["by_cause"]
    return by


def test_rotation_never_lowers_a_counter(fake_v1: FakeHost) -> None:
    """400 memcg kills appended through a 4 KiB journal: it rotates many times, and
    every reading of the counters is at least the one before and equal to the kills."""
    host = _host(fake_v1)
    cap = {"MEMCGCTL_JOURNAL_MAX_BYTES": "4K"}
    os.environ.update(cap)
    try:
        journal = Journal(host.state)
    finally:
        del os.environ["MEMCGCTL_JOURNAL_MAX_BYTES"]
    assert journal.max_bytes == 4096
    seen: list[int] = []
    for start in range(0, 400, 20):
        journal.append([_kill(seq) for seq in range(start, start + 20)])
        host.cgroup("/a/job", oom_kill=start + 20)
        seen.append(_by_cause(host, **cap)["memcg"])
    assert seen == sorted(seen) and seen[-1] == 400
    assert len(list(journal.read())) < 100  # the journal itself kept only the recent ones
    r = _run(host, "counters", "/a", "--json", **cap)
    c = json.loads(r.stdout)["cgroups"][0]
    assert c["complete"] is True and c["hierarchical"] == {"oom_kill": 400}
    mode = stat.S_IMODE(os.stat(host.state / totals.FILE).st_mode)
    assert mode == 0o600


def test_append_deduplicates_without_reading_the_journal(
    fake_v1: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(fake_v1.state)
    assert len(journal.append([_kill(1), _kill(2)])) == 2

    def no_scan(self: Journal) -> Any:
        raise AssertionError("append read the whole journal")

    monkeypatch.setattr(Journal, "read", no_scan)
    assert journal.append([_kill(2), _kill(3)]) == [_kill(3)]
    assert journal.append([_kill(3)]) == []
    # a kill of another boot with the same sequence number is another kill
    assert len(journal.append([_kill(3, boot="other-boot")])) == 1
    doc = totals.load(fake_v1.state)
    assert doc is not None and doc["kills"]["/a/job"]["memcg"] == 4


def test_the_dedup_window_is_bounded() -> None:
    doc = totals.empty(BOOT)
    for seq in range(totals.SEQ_WINDOW + 10):
        totals.remember(doc, f"{BOOT}:{seq}")
    assert len(doc["seqs"][BOOT]) == totals.SEQ_WINDOW
    assert totals.seen(doc, f"{BOOT}:5")  # older than the window: taken as seen
    assert totals.seen(doc, f"{BOOT}:{totals.SEQ_WINDOW + 9}")
    assert not totals.seen(doc, f"{BOOT}:{totals.SEQ_WINDOW + 10}")
    for n in range(totals.KEY_WINDOW + 5):
        totals.remember(doc, f"daemon-{n}")
    assert len(doc["keys"]) == totals.KEY_WINDOW


def test_manual_kill_counts_nowhere_user_kill_counts_as_user(fake_v1: FakeHost) -> None:
    host = _host(fake_v1)
    base: UserKill = {
        "time": "2023-11-14T22:14:00.000000Z",
        "kind": "user_kill",
        "cgroup": "/a/job",
        "source": "journal",
    }
    five, six = base.copy(), base.copy()
    five["pid"] = 5
    six["kind"], six["pid"] = "manual_kill", 6
    Journal(host.state).append([five, six])
    assert _by_cause(host) == {"system": 0, "memcg": 0, "user": 1}


# the kernel's log in a storm: two reported kills, then three whose report was
# rate-limited away (only the "Killed process" line, which names no cgroup)
def _storm_kmsg() -> str:
    lines = ["6,1,1000,-;Linux version 6.x"]
    seq = 2
    for n in range(5):
        pid = 100 + n
        if n < 2:
            lines.append(
                f"4,{seq},{seq}000,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),"
                f"cpuset=/,mems_allowed=0,oom_memcg=/a/job,task_memcg=/a/job,task=grow,"
                f"pid={pid},uid=0"
            )
            seq += 1
        lines.append(
            f"3,{seq},{seq}000,-;Memory cgroup out of memory: Killed process {pid} (grow) "
            "total-vm:1kB, anon-rss:32000kB, file-rss:0kB, shmem-rss:0kB, UID:0 "
            "pgtables:4kB oom_score_adj:0"
        )
        seq += 1
    return "\n".join(lines) + "\n"


def test_rate_limited_kills_are_attributed_from_the_kernel_counters(fake_v1: FakeHost) -> None:
    host = _host(fake_v1, _storm_kmsg())
    host.cgroup("/a/job", oom_kill=5)
    r = _run(host, "counters", "/a", "/a/job", "/b", "--json")
    assert r.exit_code == 0, r.output
    by = {c["cgroup"]: c for c in json.loads(r.stdout)["cgroups"]}
    assert by["/a/job"]["by_cause"]["memcg"] == 5 and by["/a/job"]["complete"] is True
    assert by["/a"]["by_cause"]["memcg"] == 5 and by["/b"]["by_cause"]["memcg"] == 0
    # counted once: a second run changes nothing
    assert _by_cause(host, "/a/job")["memcg"] == 5
    doc = totals.load(host.state)
    assert doc is not None and doc["unattributed"] == 0 and doc["attributed"] == {"/a/job": 3}


def test_the_root_counts_kills_without_a_cgroup_once(fake_v1: FakeHost) -> None:
    """Before attribution the root counts the storm's bare kill lines; after it the
    same number, now also in the cgroup: the root never jumps or falls."""
    host = _host(fake_v1, _storm_kmsg())
    host.cgroup("/a/job", oom_kill=2)  # the kernel's counter not read yet: 2 of 5
    assert _by_cause(host, "/")["memcg"] == 5
    host.cgroup("/a/job", oom_kill=5)
    (host.proc / "vmstat").write_text("oom_kill 5\n")
    assert _by_cause(host, "/")["memcg"] == 5
    assert _by_cause(host, "/a/job")["memcg"] == 5


def test_attribution_is_not_retried_while_nothing_moved(
    fake_v1: FakeHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kill line whose cgroup is gone stays unattributed; counters does not walk
    the hierarchy for it again until the journal or the host's kill count moves."""
    host = _host(fake_v1)
    lost = _kill(1)
    lost["cgroup"], lost["constraint"] = None, None  # its report was rate-limited
    Journal(host.state).append([lost])
    calls: list[int] = []
    import memcgctl.watch.tally as cmd

    real = cmd.local_kills

    def counting(env: Any) -> dict[str, int]:
        calls.append(1)
        return real(env)

    monkeypatch.setattr(cmd, "local_kills", counting)
    for _ in range(3):
        assert _by_cause(host, "/a")["memcg"] == 0
    assert len(calls) == 1
    (host.proc / "vmstat").write_text("oom_kill 1\n")
    host.cgroup("/a/job", oom_kill=1)
    assert _by_cause(host, "/a")["memcg"] == 1 and len(calls) == 2


def test_attribution_never_invents_kills(fake_v1: FakeHost) -> None:
    """The kernel counted more than the log shows, but no unattributed kill line was
    journaled: nothing is attributed, and complete says so."""
    host = _host(fake_v1)
    host.cgroup("/a/job", oom_kill=7)
    Journal(host.state).append([_kill(1)])
    r = _run(host, "counters", "/a/job", "--json")
    c = json.loads(r.stdout)["cgroups"][0]
    assert c["by_cause"]["memcg"] == 1 and c["complete"] is False


def test_corrupt_totals_are_set_aside_and_rebuilt(fake_v1: FakeHost) -> None:
    host = _host(fake_v1)
    Journal(host.state).append([_kill(1), _kill(2)])
    (host.state / totals.FILE).write_text('{"version": 1, "kills": 5}')
    r = _run(host, "counters", "/a", "--json")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["cgroups"][0]["by_cause"]["memcg"] == 2
    assert "counters.json: corrupt" in r.stderr and len(r.stderr.splitlines()) == 1
    assert list(host.state.glob("counters.json.corrupt-*"))
    assert totals.load(host.state) is not None


def test_totals_begun_this_boot_by_a_writer_that_knew_no_boot_are_adopted(
    fake_v1: FakeHost,
) -> None:
    """The daemon and kill-all append without knowing the boot: their totals are kept
    (not rebuilt from a journal that may have rotated since), created unchanged."""
    host = _host(fake_v1)
    Journal(host.state).append([_kill(1), _kill(2)])
    doc = totals.load(host.state)
    assert doc is not None and doc["boot_id"] is None
    doc["kills"]["/a/job"]["memcg"] = 7  # more than the journal holds: rotated away
    (host.state / totals.FILE).write_bytes(totals.dumps(doc))
    r = _run(host, "counters", "/a", "--json")
    out = json.loads(r.stdout)
    assert out["cgroups"][0]["by_cause"]["memcg"] == 7
    assert out["counting_since"] == doc["created"]
    again = totals.load(host.state)
    assert again is not None and again["boot_id"] == BOOT


def test_a_new_boot_starts_a_new_epoch(fake_v1: FakeHost) -> None:
    host = _host(fake_v1)
    journal = Journal(host.state)
    journal.append([_kill(1, boot="old-boot"), _kill(2, boot="old-boot"), _kill(3)])
    old = totals.load(host.state)
    assert old is not None
    old["boot_id"], old["created"] = "old-boot", 1.0
    (host.state / totals.FILE).write_bytes(totals.dumps(old))
    r = _run(host, "counters", "/a", "--json")
    doc = json.loads(r.stdout)
    assert doc["cgroups"][0]["by_cause"]["memcg"] == 1  # this boot's kill only
    assert doc["counting_since"] > 1.0


def test_prometheus_families_parse_and_do_not_mix(fake_v1: FakeHost) -> None:
    host = _host(fake_v1, _storm_kmsg())
    host.cgroup("/a/job", oom_kill=5)
    r = _run(host, "counters", "--format", "prometheus")
    assert r.exit_code == 0, r.output
    fams = parse_exposition(r.stdout)
    assert fams["memcgctl_kernel_oom_kills"][("/a/job", "local")] == 5
    assert fams["memcgctl_kernel_oom_kills"][("/a", "hierarchical")] == 5
    kills = fams["memcgctl_oom_kills"]
    assert {k[1] for k in kills} == {"system", "memcg", "user"}
    assert kills[("/a/job", "memcg")] == 5
    created = fams["memcgctl_oom_kills_created"]
    assert set(created) == set(kills) and len(set(created.values())) == 1
    assert 'kind="' not in r.stdout


@pytest.mark.parametrize("value", ["lots", "12", "-5M"])
def test_a_bad_journal_cap_is_a_usage_error(fake_v1: FakeHost, value: str) -> None:
    host = _host(fake_v1)
    r = _run(host, "counters", "--json", MEMCGCTL_JOURNAL_MAX_BYTES=value)
    assert r.exit_code == 2
    assert "MEMCGCTL_JOURNAL_MAX_BYTES" in r.stderr and len(r.stderr.splitlines()) == 1


def test_no_state_directory_is_created_by_a_read(fake_v1: FakeHost, tmp_path: Path) -> None:
    host = _host(fake_v1)
    r = _run(host, "counters", "--json")
    assert r.exit_code == 0 and not host.state.exists()
