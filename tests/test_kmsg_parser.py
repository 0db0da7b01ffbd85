"""The kernel-log parser against the documented formats of 4.19, 5.4 and 6.x."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memcgctl.logic.kmsgparse import join_continuations, parse_record, unescape, usec_to_iso
from memcgctl.logic.oomassembler import OomAssembler, kmsg_events
from memcgctl.logic.oomlines import parse_oom_line
from memcgctl.vocab.records import KernelEvent

BOOT = 1_700_000_000.0


def parse_events(
    raws: list[bytes], boot_time: float, boot_id: str = "unknown"
) -> list[KernelEvent]:
    """Raw kmsg records → events, through the pipeline the daemon and the follower use."""
    return list(kmsg_events(OomAssembler(boot_time, boot_id), raws))


# (line, what, fields that must match)
LINES: list[tuple[str, str | None, dict[str, Any]]] = [
    # invoked: 6.x, and 4.19 with nodemask
    (
        "python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        "invoked",
        {"comm": "python3", "order": 0, "adj": 0},
    ),
    (
        "my app invoked oom-killer: gfp_mask=0x6280ca(GFP_HIGHUSER_MOVABLE|__GFP_ZERO), "
        "nodemask=(null), order=0, oom_score_adj=-500",
        "invoked",
        {"comm": "my app", "adj": -500},
    ),
    # memcg report, v1 and v2
    ("memory: usage 32768kB, limit 32768kB, failcnt 59", "memcg_usage", {"limit": 32768}),
    ("memory+swap: usage 32768kB, limit 9007199254740988kB, failcnt 0", "memcg_usage", {}),
    ("kmem: usage 172kB, limit 9007199254740988kB, failcnt 0", "memcg_usage", {}),
    ("swap: usage 0kB, limit 0kB, failcnt 0", "memcg_usage", {"counter": "swap"}),
    ("Memory cgroup stats for /a/job (x):", "memcg_stats", {"cgroup": "/a/job (x)"}),
    (
        "Task in /batch/job1 killed as a result of limit of /batch",
        "task_in",
        {"task_memcg": "/batch/job1", "oom_memcg": "/batch"},
    ),
    # summary: v1 6.x (real, from this kernel), v2 without cpuset, global, 5.0-5.2
    (
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        "oom_memcg=/t/job (x),task_memcg=/t/job (x),task=python3,pid=10175,uid=0",
        "summary",
        {
            "constraint": "CONSTRAINT_MEMCG",
            "oom_memcg": "/t/job (x)",
            "task_memcg": "/t/job (x)",
            "comm": "python3",
            "pid": 10175,
            "uid": 0,
        },
    ),
    (
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/a,"
        "task_memcg=/a/b,task=a, b (c),pid=7,uid=1000",
        "summary",
        {"oom_memcg": "/a", "task_memcg": "/a/b", "comm": "a, b (c)", "pid": 7, "uid": 1000},
    ),
    (
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0-1,3,"
        "global_oom,task_memcg=/user.slice,task=stress,pid=42,uid=0",
        "summary",
        {"constraint": "CONSTRAINT_NONE", "global_oom": True, "oom_memcg": None, "pid": 42},
    ),
    (
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),global_oom,task=x,pid=1,uid=0",
        "summary",
        {"task_memcg": None, "comm": "x"},
    ),
    # Killed process: 6.x / 5.4 (UID, pgtables, oom_score_adj), 4.19 (unprefixed)
    (
        "Memory cgroup out of memory: Killed process 10175 (python3) total-vm:42268kB, "
        "anon-rss:32500kB, file-rss:6700kB, shmem-rss:0kB, UID:0 pgtables:128kB oom_score_adj:0",
        "killed",
        {
            "message": "Memory cgroup out of memory",
            "pid": 10175,
            "comm": "python3",
            "anon_rss_kb": 32500,
            "file_rss_kb": 6700,
            "shmem_rss_kb": 0,
            "uid": 0,
            "pgtables_kb": 128,
            "oom_score_adj": 0,
        },
    ),
    (
        "Out of memory: Killed process 123 (a (b) c) total-vm:10kB, anon-rss:1kB, "
        "file-rss:2kB, shmem-rss:3kB, UID:1000 pgtables:4kB oom_score_adj:-17",
        "killed",
        {"comm": "a (b) c", "pid": 123, "uid": 1000, "oom_score_adj": -17},
    ),
    (
        "Out of memory (oom_kill_allocating_task): Killed process 9 (x) total-vm:1kB, "
        "anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
        "killed",
        {"message": "Out of memory (oom_kill_allocating_task)"},
    ),
    (
        "Killed process 77 (web server) total-vm:5000kB, anon-rss:4000kB, file-rss:100kB, "
        "shmem-rss:0kB",
        "killed",
        {"message": None, "comm": "web server", "pid": 77},
    ),
    (
        "Memory cgroup out of memory: Kill process 77 (web) server)) score 900 or sacrifice child",
        "kill_select",
        {"pid": 77, "comm": "web) server)", "score": 900},
    ),
    (
        "Tasks in /a/b c are going to be killed due to memory.oom.group set",
        "oom_group",
        {"cgroup": "/a/b c"},
    ),
    (
        "oom_reaper: reaped process 10175 (python3), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
        "reaped",
        {"pid": 10175, "comm": "python3", "anon_rss_kb": 0},
    ),
    ("oom_reaper: unable to reap pid:12 (x (y))", "reap_failed", {"pid": 12, "comm": "x (y)"}),
    (
        "Memory cgroup out of memory: OOM victim 5 (a b) is already exiting. Skip killing the task",
        "already_exiting",
        {"pid": 5, "comm": "a b"},
    ),
    ("Out of memory and no killable processes...", "no_killable", {}),
    # unrelated lines and near misses
    ("Freeing unused kernel image (initmem) memory: 3732K", None, {}),
    ("oom_control is deprecated and will be removed.", None, {}),
    ("Killed process 12 (x) and more garbage", None, {}),
    ("oom-kill:garbage", None, {}),
    ("Tasks state (memory values in pages):", "tasks_state", {}),
    ("", None, {}),
]


@pytest.mark.parametrize(("line", "what", "fields"), LINES)
def test_oom_lines(line: str, what: str | None, fields: dict[str, Any]) -> None:
    parsed = parse_oom_line(line)
    if what is None:
        assert parsed is None
        return
    assert parsed is not None
    assert parsed.what == what
    for key, value in fields.items():
        assert parsed.fields[key] == value, key


def test_record_with_continuation_lines_and_escapes() -> None:
    raw = b"6,339,5140900,-;NET: Registered \\x09protocol\n SUBSYSTEM=net\n DEVICE=+net:lo\n"
    rec = parse_record(raw)
    assert rec is not None
    assert (rec.level, rec.facility, rec.seq, rec.usec, rec.flags) == (6, 0, 339, 5140900, "-")
    assert rec.text == "NET: Registered \tprotocol"
    assert rec.props == (("SUBSYSTEM", "net"), ("DEVICE", "+net:lo"))
    # extra header fields (newer kernels may add some) are ignored
    rec = parse_record(b"12,5,100,-,caller=T1;hello")
    assert rec is not None and rec.facility == 1 and rec.level == 4 and rec.text == "hello"
    assert parse_record(b"no header") is None
    assert parse_record(b"a,b,c;x") is None


def kernel_escape(data: bytes) -> str:
    """What the kernel writes to /dev/kmsg for ``data`` (printk's ``msg_add_ext_text``:
    every byte below 0x20, from 0x7f up, and the backslash as ``\\xNN``)."""
    return "".join(f"\\x{b:02x}" if b < 0x20 or b >= 0x7F or b == 0x5C else chr(b) for b in data)


@given(st.binary(max_size=40))
def test_unescape_gives_the_name_the_filesystem_gives(name: bytes) -> None:
    """Issue 21 item 9: the escapes are bytes, then UTF-8; a byte that is not UTF-8 is
    the surrogate os.fsdecode gives, so a cgroup path from the log is the directory's."""
    assert unescape(kernel_escape(name)) == os.fsdecode(name)


def test_kill_in_a_memcg_named_cafe_is_in_cafe() -> None:
    cg = kernel_escape("/t/café".encode())
    assert cg == "/t/caf\\xc3\\xa9"
    raws = [
        f"6,1,100,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,"
        f"mems_allowed=0,oom_memcg={cg},task_memcg={cg},task=gr\\xc3\\xb6w,pid=42,uid=0",
        "3,2,101,-;Memory cgroup out of memory: Killed process 42 (gr\\xc3\\xb6w) "
        "total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:1kB "
        "oom_score_adj:0",
    ]
    rec = parse_record(raws[0].encode())
    assert rec is not None and "oom_memcg=/t/café," in rec.text
    events = parse_events([r.encode() for r in raws], BOOT)
    (kill,) = (e for e in events if e["kind"] == "oom_kill")
    assert (kill["cgroup"], kill["oom_memcg"], kill["comm"]) == ("/t/café", "/t/café", "gröw")
    assert unescape("/t/x\\xffy\\x5c") == "/t/x\udcffy\\"


def test_pr_cont_fragments_are_joined() -> None:
    recs = [
        parse_record(b"6,10,100,c;Tasks in "),
        parse_record(b"6,11,101,+;/a/b"),
        parse_record(b"6,12,102,+; are going to be killed due to memory.oom.group set"),
    ]
    joined = join_continuations([r for r in recs if r is not None])
    assert len(joined) == 1
    line = parse_oom_line(joined[0].text)
    assert line is not None and line.fields == {"cgroup": "/a/b"}


def _records(*texts: str, start: int = 100) -> list[bytes]:
    return [f"3,{start + i},{(start + i) * 1000},-;{t}".encode() for i, t in enumerate(texts)]


V1_6X = _records(
    "python3 invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
    "CPU: 1 UID: 0 PID: 10175 Comm: python3 Not tainted 6.18.44 #1",
    "memory: usage 32768kB, limit 32768kB, failcnt 59",
    "memory+swap: usage 32768kB, limit 9007199254740988kB, failcnt 0",
    "kmem: usage 172kB, limit 9007199254740988kB, failcnt 0",
    "Memory cgroup stats for /t/job (x):",
    "rss 33378304",
    "Tasks state (memory values in pages):",
    "[  pid  ]   uid  tgid total_vm      rss rss_anon rss_file rss_shmem pgtables_bytes swapents oom_score_adj name",
    "[  10175]     0 10175    10567     9800     8125     1675         0   131072        0             0 python3",
    "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
    "oom_memcg=/t/job (x),task_memcg=/t/job (x),task=python3,pid=10175,uid=0",
    "Memory cgroup out of memory: Killed process 10175 (python3) total-vm:42268kB, "
    "anon-rss:32500kB, file-rss:6700kB, shmem-rss:0kB, UID:0 pgtables:128kB oom_score_adj:0",
    "oom_reaper: reaped process 10175 (python3), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
)


def test_v1_6x_report_becomes_one_kill_event() -> None:
    events = parse_events(V1_6X, BOOT, "boot")
    kills = [e for e in events if e["kind"] == "oom_kill"]
    assert len(kills) == 1
    k = kills[0]
    assert k["pid"] == 10175 and k["comm"] == "python3"
    assert k["cgroup"] == "/t/job (x)" and k["oom_memcg"] == "/t/job (x)"
    assert k["constraint"] == "CONSTRAINT_MEMCG" and k["cause"] == "memcg"
    assert (k["anon_rss_kb"], k["file_rss_kb"], k["shmem_rss_kb"]) == (32500, 6700, 0)
    assert k["oom_score_adj"] == 0 and k["uid"] == 0
    assert k["seq"] == 111 and k["dedup"] == "boot:111" and k["source"] == "kmsg"
    assert k["time"] == usec_to_iso(111_000, BOOT)
    assert [e["kind"] for e in events] == ["oom_kill", "oom_reaped"]


def test_global_oom_54_with_unrelated_lines_interleaved() -> None:
    events = parse_events(
        _records(
            "stress invoked oom-killer: gfp_mask=0x100cca(GFP_HIGHUSER_MOVABLE), order=0, "
            "oom_score_adj=0",
            "e1000e 0000:00:19.0 eth0: NIC Link is Up",
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,"
            "global_oom,task_memcg=/user.slice/a b,task=my (x) app,pid=4242,uid=1000",
            "audit: type=1400 something",
            "Out of memory: Killed process 4242 (my (x) app) total-vm:9000kB, anon-rss:8000kB, "
            "file-rss:10kB, shmem-rss:5kB, UID:1000 pgtables:40kB oom_score_adj:200",
        ),
        BOOT,
    )
    assert len(events) == 1
    k = events[0]
    assert k["cgroup"] == "/user.slice/a b" and k["oom_memcg"] == "/"
    assert k["constraint"] == "CONSTRAINT_NONE" and k["cause"] == "system"
    assert k["comm"] == "my (x) app" and k["oom_score_adj"] == 200 and k["uid"] == 1000


def test_419_kill_and_sacrifice_child() -> None:
    events = parse_events(
        _records(
            "bash invoked oom-killer: gfp_mask=0x6000c0(GFP_KERNEL), nodemask=(null), order=0, "
            "oom_score_adj=0",
            "Task in /batch/j1 killed as a result of limit of /batch",
            "memory: usage 65536kB, limit 65536kB, failcnt 12",
            "Memory cgroup out of memory: Kill process 300 (parent) score 950 or sacrifice child",
            "Killed process 301 (child) total-vm:70000kB, anon-rss:60000kB, file-rss:100kB, "
            "shmem-rss:0kB",
        ),
        BOOT,
    )
    assert len(events) == 1
    k = events[0]
    assert k["pid"] == 301 and k["comm"] == "child"
    assert k["cgroup"] == "/batch/j1" and k["oom_memcg"] == "/batch"
    assert k["cause"] == "memcg" and k["message"] == "Memory cgroup out of memory"
    assert k["uid"] is None and k["oom_score_adj"] is None


def test_oom_group_kills_members() -> None:
    events = parse_events(
        _records(
            "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),oom_memcg=/g,task_memcg=/g/w1,"
            "task=w,pid=10,uid=0",
            "Memory cgroup out of memory: Killed process 10 (w) total-vm:1kB, anon-rss:1kB, "
            "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
            "Tasks in /g are going to be killed due to memory.oom.group set",
            "Memory cgroup out of memory: Killed process 11 (w2) total-vm:1kB, anon-rss:1kB, "
            "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
        ),
        BOOT,
    )
    assert [e["kind"] for e in events] == ["oom_kill", "oom_group_kill", "oom_kill"]
    assert events[0]["cgroup"] == "/g/w1"
    assert events[1]["cgroup"] == "/g" and events[1]["constraint"] == "CONSTRAINT_MEMCG"
    assert events[2]["pid"] == 11 and events[2]["oom_group"] == "/g"
    assert events[2]["cgroup"] == "/g" and events[2]["cause"] == "memcg"


def test_rate_limited_report_still_gives_a_kill() -> None:
    events = parse_events(
        _records(
            "Memory cgroup out of memory: Killed process 5 (x) total-vm:1kB, anon-rss:1kB, "
            "file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0"
        ),
        BOOT,
    )
    assert events[0]["cgroup"] is None
    assert events[0]["constraint"] == "CONSTRAINT_MEMCG" and events[0]["cause"] == "memcg"


def test_summary_of_another_pid_is_not_merged() -> None:
    asm = OomAssembler(BOOT)
    out = []
    for raw in _records(
        "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),global_oom,task_memcg=/x,"
        "task=a,pid=1,uid=0",
        "Out of memory: Killed process 2 (b) total-vm:1kB, anon-rss:1kB, file-rss:0kB, "
        "shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0",
    ):
        rec = parse_record(raw)
        assert rec is not None
        out += asm.feed(rec)
    assert out[0]["cgroup"] is None and out[0]["cause"] == "system"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_lines_never_raise(text: str) -> None:
    parse_oom_line(text)
    parse_record(text)
    parse_events([f"3,1,1,-;{text}".encode(), text.encode("utf-8", "replace")], BOOT)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([line for line, _, _ in LINES]),
    st.integers(min_value=0, max_value=60),
    st.text(max_size=10),
)
def test_mutated_oom_lines_never_raise(line: str, cut: int, junk: str) -> None:
    parse_oom_line(line[:cut] + junk + line[cut:])
    parse_oom_line(line[:cut])
