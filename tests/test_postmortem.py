"""Saved kernel logs: ``events --from`` in every format and layout, and
``explain-kill`` rebuilding the kernel's decision, on logs written here in the layouts of
each kernel era.  Real reports come from real kernels: tests/test_postmortem_kernel.py
saves a live OOM in every format and reads it back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.logic.logtext import MAX_LINE, normalise, read_lines
from memcgctl.logic.oomassembler import collect, saved_events
from memcgctl.logic.oomreport import LogBound, within
from memcgctl.logic.postmortem import explain_report
from memcgctl.logic.reportsnapshot import BadnessMap
from memcgctl.render.reportwords import note_lines
from memcgctl.vocab.records import KernelEvent

# one 5.x memcg OOM report, message texts only
REPORT_5X = [
    "stress invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    "CPU: 1 PID: 4242 Comm: stress Not tainted 5.15.0-91-generic #101-Ubuntu",
    "memory: usage 102400kB, limit 102400kB, failcnt 12",
    "swap: usage 0kB, limit 0kB, failcnt 0",
    "Memory cgroup stats for /batch/job 1:",
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
    "[   4200]     0  4200     2240      998    57344        0             0 bash",
    "[   4242]  1000  4242    30000    25000   200704        0           100 stress",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/batch/job 1,task_memcg=/batch/job 1,task=stress,pid=4242,uid=1000",
    "Memory cgroup out of memory: Killed process 4242 (stress) total-vm:120000kB, "
    "anon-rss:99000kB, file-rss:1000kB, shmem-rss:0kB, UID:1000 pgtables:196kB "
    "oom_score_adj:100",
]


def _fmt(kind: str, i: int, text: str) -> str:
    sec = 1234 + i
    if kind == "kmsg":
        return f"6,{100 + i},{sec * 1_000_000 + 5},-;{text}"
    if kind == "dmesg":
        return f"[{sec:>5}.000005] {text}"
    if kind == "dmesg-T":
        return f"[Mon Nov 30 13:00:{i:02d} 2026] {text}"
    if kind == "dmesg-T-de":
        return f"[Mo Nov 30 13:00:{i:02d} 2026] {text}"
    if kind == "dmesg-T-fr":
        return f"[lun. nov. 30 13:00:{i:02d} 2026] {text}"
    if kind == "dmesg-T-zh":
        return f"[月 11月 30 13:00:{i:02d} 2026] {text}"
    if kind == "dmesg-x":
        return f"kern  :err   : [{sec:>5}.000005] {text}"
    if kind == "syslog":
        return f"Nov 30 13:00:{i:02d} web-1 kernel: [{sec:>5}.000005] {text}"
    if kind == "syslog-nohost":
        return f"Nov 30 13:00:{i:02d} kernel: {text}"
    if kind == "short-iso":
        return f"2026-11-30T13:00:{i:02d}+0000 web-1 kernel: {text}"
    if kind == "short-precise":
        return f"Nov 30 13:00:{i:02d}.123456 web-1 kernel: {text}"
    if kind == "rfc3339":
        return f"2026-11-30T13:00:{i:02d}.123456+00:00 web-1 kernel: {text}"
    if kind == "json":
        return json.dumps(
            {
                "MESSAGE": text,
                "__REALTIME_TIMESTAMP": str((1796043600 + i) * 1_000_000),
                "_SOURCE_MONOTONIC_TIMESTAMP": str(sec * 1_000_000),
                "_TRANSPORT": "kernel",
            }
        )
    if kind == "bare":
        return text
    raise AssertionError(kind)


FORMATS = [
    "kmsg",
    "dmesg",
    "dmesg-T",
    "dmesg-T-de",
    "dmesg-T-fr",
    "dmesg-T-zh",
    "dmesg-x",
    "syslog",
    "syslog-nohost",
    "short-iso",
    "short-precise",
    "rfc3339",
    "json",
    "bare",
]
NOISE = [
    "systemd[1]: Started Session 4 of user root.",
    "EXT4-fs (sda1): mounted filesystem with ordered data mode",
]


def _log(kind: str, lines: list[str] = REPORT_5X, noise: bool = True) -> bytes:
    out: list[str] = []
    for i, text in enumerate(lines):
        if noise:
            out.append(_fmt(kind, i, NOISE[i % 2]))
        out.append(_fmt(kind, i, text))
    return ("\n".join(out) + "\n").encode()


def _events(data: bytes, split: int = 7) -> list[KernelEvent]:
    chunks = [data[i : i + split] for i in range(0, len(data), split)]
    return [e for e in saved_events(read_lines(chunks)) if e["kind"] == "oom_kill"]


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_gives_the_kill(kind: str) -> None:
    (ev,) = _events(_log(kind))
    assert ev["pid"] == 4242
    assert ev["comm"] == "stress"
    assert ev["constraint"] == "CONSTRAINT_MEMCG"
    assert ev["oom_memcg"] == "/batch/job 1"
    assert ev["cgroup"] == "/batch/job 1"
    assert ev["anon_rss_kb"] == 99000
    assert ev["oom_score_adj"] == 100
    assert ev["uid"] == 1000
    assert ev["source"] == "kmsg"
    if kind in ("kmsg", "dmesg", "dmesg-x", "syslog", "json"):
        assert ev["uptime_s"] == pytest.approx(1234 + len(REPORT_5X) - 1, abs=0.01)
    if kind in ("short-iso", "rfc3339", "json"):
        assert str(ev["time"]).startswith("2026-11-30T13:00:1")
    if kind in ("dmesg-T-zh", "bare"):
        assert ev["time"] is None  # no month it can read: the message still counts
    if kind.startswith("dmesg-T"):
        assert ev["log_time"].endswith(" 2026")


def test_every_format_mixed_in_one_file_gives_one_kill_per_report() -> None:
    data = b"".join(_log(k) for k in FORMATS)
    evs = _events(data, split=4096)
    assert [e["pid"] for e in evs] == [4242] * len(FORMATS)


def test_explain_kill_is_the_same_in_every_format() -> None:
    for kind in FORMATS:
        report, kills = collect(read_lines([_log(kind)]))
        assert report is not None and kills == 1, kind
        x = explain_report(report)
        assert x.verdict == "matches", kind
        assert x.decision.victim is not None and x.decision.victim.pid == 4242


def test_totalpages_and_points_of_a_memcg_oom() -> None:
    report, _ = collect(read_lines([_log("dmesg")]))
    assert report is not None
    x = explain_report(report)
    # limit 102400kB = 25600 pages (swap limit 0): adj 100 * (25600 // 1000) = 2500
    assert x.decision.totalpages == 25600
    top = x.decision.candidates[0]
    assert top.points == 25000 + 0 + 200704 // 4096 + 2500
    assert x.rules.version == (5, 15) and x.rules.ties_to_last and not x.rules.clamp_to_one


# -- report layouts since 3.x --------------------------------------------------------

LAYOUT_3X = [
    "java invoked oom-killer: gfp_mask=0xd0, order=0, oom_score_adj=0",
    "java cpuset=/ mems_allowed=0",
    "CPU: 1 PID: 9949 Comm: java Tainted: P           OE  ------------   "
    "3.10.0-327.13.1.el7.x86_64 #1",
    "Task in /docker/abc killed as a result of limit of /docker/abc",
    "memory: usage 262144kB, limit 262144kB, failcnt 4462",
    "memory+swap: usage 262144kB, limit 524288kB, failcnt 0",
    "[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name",
    "[ 9900]     0  9900     1000      100      10        0             0 sh",
    "[ 9949]  1000  9949   900000    60000     200        0             0 java",
    "[ 9950]  1000  9950   100000    60100     100        0          -1000 agent",
    "Memory cgroup out of memory: Kill process 9949 (java) score 915 or sacrifice child",
    "Killed process 9951 (java-child) total-vm:12345kB, anon-rss:1000kB, file-rss:20kB",
]


def test_3x_layout_sacrifice_child_and_the_printed_score() -> None:
    (ev,) = _events(_log("syslog", LAYOUT_3X))
    assert ev["pid"] == 9951 and ev["comm"] == "java-child"
    assert ev["constraint"] == "CONSTRAINT_MEMCG"
    assert ev["oom_memcg"] == "/docker/abc" and ev["cgroup"] == "/docker/abc"
    assert ev["shmem_rss_kb"] is None and ev["oom_score_adj"] is None
    report, _ = collect(read_lines([_log("syslog", LAYOUT_3X)]))
    assert report is not None
    x = explain_report(report)
    assert x.rules.version == (3, 10) and x.rules.root_bonus == "adj30"
    # agent has -1000: never; java 60200 points beats sh
    assert [s.process.pid for s in x.decision.candidates] == [9949, 9900]
    assert x.kernel_pid == 9949 and x.verdict == "matches"
    assert any("sacrifice child" in w for w in note_lines(x.why))
    # totalpages = 65536 + min(65536 memsw - limit, no swap size: in full) = 131072
    assert x.decision.totalpages == 131072
    assert x.score_check is not None
    assert x.score_check["rebuilt"] == 60200 * 1000 // 131072


LAYOUT_4X = [
    "a.out invoked oom-killer: gfp_mask=0x24280ca(GFP_HIGHUSER_MOVABLE|__GFP_ZERO), "
    "order=0, oom_score_adj=0",
    "Total swap = 0kB",
    "1048576 pages RAM",
    "[ pid ]   uid  tgid total_vm      rss nr_ptes nr_pmds swapents oom_score_adj name",
    "[ 3941]  1000  3941    28880      124      14       3        0             0 bash",
    "[ 3962]  1000  3962   541717   395780     784       6        0             0 a.out",
    "[ 3963]  1000  3963     1078       21       7       3        0          1000 sleep",
    "Out of memory: Kill process 3963 (sleep) score 1000 or sacrifice child",
    "Killed process 3963 (sleep) total-vm:4312kB, anon-rss:84kB, file-rss:0kB, shmem-rss:0kB",
]


def test_4x_nr_pmds_host_oom_with_adj_1000() -> None:
    (ev,) = _events(_log("dmesg", LAYOUT_4X))
    assert ev["pid"] == 3963 and ev["constraint"] is None and ev["cause"] == "system"
    report, _ = collect(read_lines([_log("dmesg", LAYOUT_4X)]))
    assert report is not None and report.layout == "nr_pmds"
    x = explain_report(report)
    assert x.oom_root == "/" and not x.memcg_oom
    assert x.decision.totalpages == 1048576
    # sleep: 21 + 7 + 3 + 1000 * 1048 = 1048031 > a.out 396570
    assert x.decision.candidates[0].process.pid == 3963
    assert x.verdict == "matches"


LAYOUT_68 = [
    "dd invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0, "
    "oom_score_adj=0",
    "CPU: 3 UID: 0 PID: 77 Comm: dd Not tainted 6.12.1 #1",
    "memory: usage 40960kB, limit 40960kB, failcnt 3",
    "swap: usage 0kB, limit 0kB, failcnt 0",
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes "
    "swapents oom_score_adj name",
    "[     70]     0    70     1000     5000     4000      900       100    40960        0"
    "             0 a b(c)",
    "[     77]     0    77     1000     5000     4500      500         0    40960        0"
    "             0 dd",
    "Tasks in /t/grp are going to be killed due to memory.oom.group set",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/t/grp,task_memcg=/t/grp/sub,task=dd,pid=77,uid=0",
    "Memory cgroup out of memory: Killed process 77 (dd) total-vm:4000kB, anon-rss:18000kB, "
    "file-rss:2000kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0",
    "Memory cgroup out of memory: Killed process 70 (a b(c)) total-vm:4000kB, "
    "anon-rss:16000kB, file-rss:3600kB, shmem-rss:400kB, UID:0 pgtables:40kB oom_score_adj:0",
]


def test_68_layout_tie_goes_to_the_last_scanned_and_oom_group() -> None:
    data = _log("short-iso", LAYOUT_68)
    evs = saved_events(read_lines([data]))
    kinds = [(e["kind"], e.get("pid")) for e in evs]
    assert ("oom_group_kill", None) in kinds
    kills = _events(data)
    assert [k["pid"] for k in kills] == [77, 70]
    assert kills[1]["comm"] == "a b(c)" and kills[1]["oom_group"] == "/t/grp"
    report, _ = collect(read_lines([data]), pid=70)
    assert report is not None and report.layout == "rss_anon"
    x = explain_report(report)
    # equal points (5000 + 10): 6.x keeps the one scanned last, pid 77
    assert x.decision.candidates[0].process.pid == 77
    assert x.kernel_pid == 77 and x.verdict == "matches"
    assert any("memory.oom.group" in w for w in note_lines(x.why))


def test_vendor_uid_layout_and_empty_constraint() -> None:
    lines = [
        "oom-kill:constraint=,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,"
        "task_memcg=/user.slice,task=vim,pid=12,uid=1000",
        "Killed process 12, UID 1000, (vim) total-vm:100kB, anon-rss:50kB, file-rss:0kB, "
        "shmem-rss:0kB",
    ]
    (ev,) = _events(_log("syslog", lines))
    assert ev["pid"] == 12 and ev["comm"] == "vim" and ev["uid"] == 1000
    assert ev["oom_memcg"] == "/" and ev["cgroup"] == "/user.slice"


def test_wrapped_truncated_and_interleaved_lines() -> None:
    text = "\n".join(
        [
            "[  10.000001] stress invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL),",
            "order=0, oom_score_adj=0",
            "[  10.000002] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
            "mems_allowed=0,oom_memcg=/a,task_memcg=/a,task=stress,pid=5,uid=0",
            "[  10.000003] usb 1-1: new high-speed USB device number 2 using xhci_hcd",
            "[  10.000004] Memory cgroup out of memory: Killed process 5 (stress) total-vm:1000kB,",
            " anon-rss:900kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
            "[  11.000000] Memory cgroup out of memory: Killed process 6 (cut) total-vm:10",
            "[  11.000001] random driver message",
        ]
    ).encode()
    evs = _events(text)
    assert [e["pid"] for e in evs] == [5, 6]
    assert evs[0]["anon_rss_kb"] == 900 and evs[0]["cgroup"] == "/a"
    assert evs[1]["comm"] == "cut" and evs[1]["anon_rss_kb"] is None  # truncated: what it says


def test_garbage_never_raises() -> None:
    data = b"\xff\xfe[\x00]{not json\n[ pid ]\n[ 1 ] x\nKilled process\n" * 50 + b'{"MESSAGE": 5}'
    assert list(saved_events(read_lines([data]))) == []


def test_normalise_keeps_the_log_clock() -> None:
    ll = normalise("Nov 30 13:00:01 host kernel: [  5.5] hello", 3)
    assert ll.text == "hello" and ll.uptime == 5.5 and ll.clock == "Nov 30 13:00:01"
    other = normalise("Nov 30 13:00:01 host sshd[12]: Killed process 5 (x)", 4)
    assert other.text == ""  # another program's line, not the kernel's


def test_since_until_on_the_log_clock() -> None:
    evs = _events(_log("dmesg") + _log("json"))
    assert [within(e, LogBound("1240"), None) for e in evs] == [True, True]
    assert [within(e, None, LogBound("1240")) for e in evs] == [False, False]
    lo = LogBound("2026-11-30T13:00:11+00:00")
    # dmesg has no wall clock: kept; json's kill is at 13:00:10
    assert [within(e, lo, None) for e in evs] == [True, False]


# -- explain-kill verdicts and the counterfactual ----------------------------------


def test_exiting_victim_and_incomplete_table() -> None:
    exiting = [
        "x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "memory: usage 4096kB, limit 4096kB, failcnt 1",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        "[     9]     0     9     1000      900     4096        0             0 x",
        "Memory cgroup out of memory: OOM victim 9 (x) is already exiting. Skip killing the task",
    ]
    report, kills = collect(read_lines([_log("dmesg", exiting)]), pid=9)
    assert report is not None and kills == 0
    assert explain_report(report).verdict == "exiting"
    incomplete = [*LAYOUT_68[:7], *LAYOUT_68[9:11]]  # the victim's row is missing
    report, _ = collect(read_lines([_log("dmesg", incomplete)]))
    assert report is not None
    assert explain_report(report).verdict == "incomplete"


def test_badness_file_changes_the_priority_victim() -> None:
    report, _ = collect(read_lines([_log("dmesg")]))
    assert report is not None
    x = explain_report(report)
    assert x.priority is not None and x.priority.victim is not None
    assert x.priority.victim.pid == 4242  # default badness: the largest rss
    bad = BadnessMap.parse("# bash is expendable\nbash 10\n/batch/* 900\n")
    y = explain_report(report, bad)
    assert y.priority is not None and y.priority.victim is not None
    assert y.priority.victim.pid == 4200 and y.priority.victim.badness == 10


def test_badness_file_errors_are_usage_errors() -> None:
    from memcgctl.vocab.errors import UsageProblem

    with pytest.raises(UsageProblem, match="f:2"):
        BadnessMap.parse("a 1\nb lots\n", "f")


# -- the commands ----------------------------------------------------------------------


def _run(args: list[str], stdin: bytes | None = None) -> Any:
    return CliRunner().invoke(cli, args, input=stdin, catch_exceptions=False)


def test_events_from_stdin_json_lines(tmp_path: Path) -> None:
    r = _run(["events", "--from", "-", "--json-lines"], _log("syslog"))
    assert r.exit_code == 0
    docs = [json.loads(line) for line in r.output.splitlines()]
    assert [d["pid"] for d in docs if d["kind"] == "oom_kill"] == [4242]
    r = _run(["events", "/batch", "--from", "-", "--json-lines"], _log("syslog"))
    assert r.output.strip()
    r = _run(["events", "/other", "--from", "-", "--json-lines"], _log("syslog"))
    assert r.output.strip() == ""


def test_events_from_json_is_one_document() -> None:
    doc = json.loads(_run(["events", "--from", "-", "--json"], _log("syslog")).output)
    assert doc["from"] == "-" and doc["root"] == "/"
    assert [e["pid"] for e in doc["events"] if e["kind"] == "oom_kill"] == [4242]
    doc = json.loads(_run(["events", "/other", "--from", "-", "--json"], _log("syslog")).output)
    assert doc["events"] == []


def test_events_from_usage_errors(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["events", "--from", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "no such file" in r.output
    r = CliRunner().invoke(cli, ["events", "--from", str(tmp_path)])
    assert r.exit_code == 2
    r = CliRunner().invoke(cli, ["events", "--from", "-", "--follow"], input=b"")
    assert r.exit_code == 2
    r = CliRunner().invoke(cli, ["events", "--from", "-", "--since", "yesterday-ish"], input=b"")
    assert r.exit_code == 2


def test_explain_kill_json_and_text(tmp_path: Path) -> None:
    log = tmp_path / "kern.log"
    log.write_bytes(_log("syslog", LAYOUT_3X) + _log("syslog"))
    bad = tmp_path / "badness"
    bad.write_text("/batch/job 1 100\n")
    r = _run(["explain-kill", "--from", str(log), "--json", "--badness", str(bad)])
    doc = json.loads(r.output)
    assert doc["killed_pids"] == [4242] and doc["verdict"] == "matches"
    assert doc["kernel"]["candidates"][0]["pid"] == 4242
    assert doc["kernel"]["totalpages"] == 25600
    assert doc["priority"]["victim"]["pid"] == 4242
    assert doc["kernel_rules"]["version"] == "5.15"
    r = _run(["explain-kill", "9951", "--from", str(log), "--plain"])
    assert "sacrifice child" in r.output and "pid 9949 (java)" in r.output
    r = CliRunner().invoke(cli, ["explain-kill", "31337", "--from", str(log)])
    assert r.exit_code == 1 and "no OOM kill of pid 31337" in r.output


def test_events_from_imports_no_table_library(tmp_path: Path) -> None:
    log = tmp_path / "k.log"
    log.write_bytes(_log("dmesg"))
    code = (
        "import sys\nfrom memcgctl.cli import main\n"
        f"rc = main(['events', '--from', {str(log)!r}])\n"
        "bad = [m for m in ('rich', 'tabulate') if m in sys.modules]\n"
        "sys.stderr.write(repr(bad))\nsys.exit(1 if bad else rc)\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_a_victim_that_is_not_the_top_is_called_out() -> None:
    lines = [*LAYOUT_4X[:-2]]
    lines += [
        "Out of memory: Kill process 3941 (bash) score 0 or sacrifice child",
        "Killed process 3941 (bash) total-vm:115520kB, anon-rss:496kB, file-rss:0kB, shmem-rss:0kB",
    ]
    report, _ = collect(read_lines([_log("dmesg", lines)]))
    assert report is not None
    x = explain_report(report)
    assert x.verdict == "differs" and x.victim_is_top is False
    assert x.decision.candidates[0].process.pid == 3963
    assert any("not the top pid 3963" in w for w in note_lines(x.why))


def test_no_killable_process() -> None:
    lines = [
        "x invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=-1000",
        "memory: usage 4096kB, limit 4096kB, failcnt 1",
        "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
        "[      9]     0     9     1000      900     4096        0         -1000 x",
        "Out of memory and no killable processes...",
    ]
    evs = list(saved_events(read_lines([_log("dmesg", lines)])))
    assert [e["kind"] for e in evs] == ["oom_no_victim"]


def test_a_saved_raw_kmsg_record_is_unescaped_as_live() -> None:
    """Issue 21 item 9: a dump of /dev/kmsg holds ``caf\\xc3\\xa9`` (the kernel's escape
    of every byte from 0x7f up): the same event as the live log, in ``café``; and dmesg,
    which prints the name as UTF-8 text, says the same."""
    escaped = [t.replace("/batch/job 1", "/batch/caf\\xc3\\xa9") for t in REPORT_5X]
    plain = [t.replace("/batch/job 1", "/batch/café") for t in REPORT_5X]
    (ev,) = _events(_log("kmsg", escaped))
    (same,) = _events(_log("dmesg", plain))
    assert ev["cgroup"] == ev["oom_memcg"] == same["cgroup"] == "/batch/café"


# -- issue 21 item 10: a line without an end ---------------------------------------------


@pytest.mark.parametrize("split", [7, 1 << 20])
def test_an_over_long_line_is_cut_and_the_log_goes_on(split: int) -> None:
    """A line of 3 × MAX_LINE bytes, then a real report: the line is cut (one call
    naming it), the report after it is read as ever."""
    cuts: list[int] = []
    data = b"x" * (3 * MAX_LINE) + b"\n" + _log("dmesg")
    chunks = [data[i : i + split] for i in range(0, len(data), split)]
    lines = list(read_lines(chunks, on_cut=cuts.append))
    assert cuts == [1]
    assert max(len(ln.text) for ln in lines) <= MAX_LINE
    (ev,) = (e for e in saved_events(iter(lines)) if e["kind"] == "oom_kill")
    assert ev["pid"] == 4242 and ev["cgroup"] == "/batch/job 1"


def test_events_from_a_sparse_gigabyte_without_newline(tmp_path: Path) -> None:
    """``events --from`` a 1 GiB sparse file with no newline, then a report: it ends,
    warns once on stderr naming the line, finds the kill after it, and its peak RSS
    stays far below the file (the child runs under a 512 MiB address-space limit; the
    whole line held in memory would need twice the file)."""
    import resource

    log = tmp_path / "sparse.log"
    with open(log, "wb") as f:
        f.truncate(1 << 30)
        f.seek(1 << 30)
        f.write(b"\n" + _log("dmesg"))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))

    # the child's own peak: VmHWM of its mm, written at exit (ru_maxrss would count the
    # forking pytest's RSS too: exec carries the old mm's high-water mark over)
    hwm = tmp_path / "hwm"
    run = (
        "import atexit, runpy, sys\n"
        "def hwm():\n"
        f"    with open({str(hwm)!r}, 'w') as f:\n"
        "        f.write(next(x for x in open('/proc/self/status') if x.startswith('VmHWM')))\n"
        "atexit.register(hwm)\n"
        "sys.argv[0] = 'memcgctl'\n"
        "runpy.run_module('memcgctl', run_name='__main__')\n"
    )
    out_file, err_file = tmp_path / "out", tmp_path / "err"
    with open(out_file, "wb") as out, open(err_file, "wb") as err:
        p = subprocess.Popen(
            [sys.executable, "-c", run, "events", "--from", str(log), "--json-lines"],
            cwd=Path(__file__).resolve().parent.parent,
            stdout=out,
            stderr=err,
            preexec_fn=limit,
        )
    assert p.wait() == 0, err_file.read_text()[-2000:]
    peak_mib = int(hwm.read_text().split()[1]) >> 10  # "VmHWM:   31844 kB"
    print(f"events --from a 1 GiB line: peak RSS {peak_mib} MiB")
    assert peak_mib < 128, peak_mib
    assert err_file.read_text().splitlines() == [
        f"memcgctl: warning: {log}: line 1 is longer than {MAX_LINE >> 10} KiB: cut there"
        " (and any other line that long)"
    ]
    kills = [json.loads(x) for x in out_file.read_text().splitlines()]
    assert [k["pid"] for k in kills if k["kind"] == "oom_kill"] == [4242]
