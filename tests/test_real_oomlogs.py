"""Every saved OOM log under ``shared/data/oom-logs`` (real third-party reports, read at
run time, never copied here) yields the kills it names, with the fields the log gives.

The expected kills below were written by reading each log: pid, comm, constraint,
oom_memcg, the task's memcg (the event's ``cgroup``), anon-rss (kB) and oom_score_adj;
None where the log does not say.  Each case is named by its file.
"""

from __future__ import annotations

from typing import Any

import pytest

from memcgctl.logic.logtext import read_lines
from memcgctl.logic.oomassembler import saved_events
from memcgctl.render.eventline import worded
from memcgctl.vocab.records import KernelEvent
from tests.realdata import DATA, data_file

Kill = tuple[int | None, str | None, str | None, str | None, str | None, int | None, int | None]

# file (under oom-logs/) -> its kills in log order
EXPECTED: dict[str, list[Kill]] = {
    "boom_example_oomkill_el9.txt": [
        (
            3499662,
            "postmaster",
            "CONSTRAINT_NONE",
            "/",
            "/system.slice/postgresql-15.service",
            854636,
            0,
        ),
    ],
    "boom_exemple2_el9.txt": [
        (1040, "mariadbd", "CONSTRAINT_NONE", "/", "/system.slice/mariadb.service", 1143060, 0),
    ],
    "cadvisor_containerOomExampleLog.txt": [
        (13536, "memorymonster", "CONSTRAINT_MEMCG", "/mem2", "/mem2", 920, None),
    ],
    "cadvisor_systemOomExampleLog.txt": [
        (1532, "badsysprogram", None, None, None, 1595164, None),
    ],
    "linux-oom-parser_nixos-linux-6.18.log": [
        (
            55817,
            "stress",
            "CONSTRAINT_NONE",
            "/",
            "/user.slice/user-1000.slice/session-80.scope",
            0,
            1000,
        ),
    ],
    "lkml_20190201_oom_group_kill_init_5.0-rc4.log": [
        (9188, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 10324, None),
        (1, "systemd", "CONSTRAINT_NONE", "/test1", "/test1", 1228, None),
        (9182, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 76, None),
        (9183, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 6228, None),
        (9184, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 6228, None),
        (9185, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 6228, None),
        (9186, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 4180, None),
        (9187, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 4180, None),
        (9189, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 6228, None),
        (9190, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 552, None),
        (9191, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 4180, None),
        (9192, "a.out", "CONSTRAINT_NONE", "/test1", "/test1", 1080, None),
    ],
    "npd_problem_oom_kill.txt": [
        (1012, "heapster", "CONSTRAINT_MEMCG", None, None, 306328, None),
    ],
    "oomanalyser_example_archlinux_6_1_1.txt": [
        (
            473206,
            "doxygen",
            "CONSTRAINT_NONE",
            "/",
            "/user.slice/user-504.slice/session-2.scope",
            9234320,
            0,
        ),
    ],
    "oomanalyser_example_proxmox_cgroup_oom.txt": [
        (
            3902942,
            "php-fpm",
            "CONSTRAINT_MEMCG",
            "/lxc/39004",
            "/lxc/39004/ns/system.slice/docker-a59e4e7d3090c04c6ce5a4b7a8bc85228eb9b96ac00b1284643a8c7c11dda661.scope",
            12625252,
            0,
        ),
    ],
    "oomanalyser_example_rhel7.txt": [
        (6576, "mysqld", None, None, None, 20629004, None),
    ],
    "oomanalyser_example_ubuntu2110.txt": [
        (
            651,
            "unattended-upgr",
            "CONSTRAINT_NONE",
            "/",
            "/system.slice/unattended-upgrades.service",
            8380,
            0,
        ),
    ],
    "out-of-memory_messages.1_el8.log": [
        (
            3117813,
            "cache-main",
            "CONSTRAINT_NONE",
            "/",
            "/system.slice/varnish.service",
            4805020,
            0,
        ),
    ],
    "out-of-memory_messages_el6.log": [
        (40738, "mysqld", None, None, None, 13128, None),
        (13929, "php-fpm", None, None, None, 138288, None),
        (14278, "php-fpm", None, None, None, 139876, None),
        (14290, "php-fpm", None, None, None, 136404, None),
        (14293, "php-fpm", None, None, None, 136056, None),
        (14301, "php-fpm", None, None, None, 135108, None),
        (14302, "php-fpm", None, None, None, 135996, None),
        (14303, "php-fpm", None, None, None, 128600, None),
        (14334, "php-fpm", None, None, None, 139132, None),
        (14335, "php-fpm", None, None, None, 135524, None),
        (14358, "php-fpm", None, None, None, 134912, None),
        (14361, "php-fpm", None, None, None, 139728, None),
        (14362, "php-fpm", None, None, None, 138440, None),
        (14393, "php-fpm", None, None, None, 135864, None),
        (14396, "php-fpm", None, None, None, 139364, None),
        (14397, "php-fpm", None, None, None, 135604, None),
        (14418, "php-fpm", None, None, None, 138800, None),
        (14419, "php-fpm", None, None, None, 136564, None),
        (14420, "php-fpm", None, None, None, 135876, None),
        (14421, "php-fpm", None, None, None, 138312, None),
    ],
    "parseoom_messages_debian11.log": [
        (517, "clamd", "CONSTRAINT_NONE", "/", "/system.slice/clamav-daemon.service", 1689296, 0),
    ],
    "excerpts/01-cadvisor-memcg-3.13.log": [
        (13536, "memorymonster", "CONSTRAINT_MEMCG", "/mem2", "/mem2", 920, None),
    ],
    "excerpts/02-cadvisor-global-3.13.log": [
        (1532, "badsysprogram", None, None, None, 1595164, None),
    ],
    "excerpts/03-cadvisor-docker-4.8.log": [
        (
            1381,
            "gunpowder-memho",
            "CONSTRAINT_MEMCG",
            "/docker/2e088fe462e25e60be1dafafe2c05c47bda1a97978648d10ad2b7484fc0b8f50",
            "/docker/2e088fe462e25e60be1dafafe2c05c47bda1a97978648d10ad2b7484fc0b8f50",
            18624,
            None,
        ),
        (
            1667,
            "gunpowder-memho",
            "CONSTRAINT_MEMCG",
            "/docker/6c6fcab8562fd3150854986b78552c732f234fd405b624207b8843528a145e70",
            "/docker/6c6fcab8562fd3150854986b78552c732f234fd405b624207b8843528a145e70",
            248180,
            None,
        ),
    ],
    "excerpts/04-parseoom-global-5.10.log": [
        (517, "clamd", "CONSTRAINT_NONE", "/", "/system.slice/clamav-daemon.service", 1689296, 0),
    ],
    "excerpts/05-boom-global-rhel9-5.14.log": [
        (1040, "mariadbd", "CONSTRAINT_NONE", "/", "/system.slice/mariadb.service", 1143060, 0),
    ],
    "excerpts/06-harvester-memcg-syslog-5.14.log": [
        (
            39079,
            "qemu-system-x86",
            "CONSTRAINT_MEMCG",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod968a06fb_9ab9_4819_8caf_0392ddff3d9b.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod968a06fb_9ab9_4819_8caf_0392ddff3d9b.slice/cri-containerd-0f32894de86edf3d3832702af794874ef8d400b4969acdea4976b12040756e0d.scope",
            None,
            None,
        ),
    ],
    "excerpts/07-harvester-memcg-dmesgT-5.3.log": [
        (
            70870,
            "qemu-system-x86",
            "CONSTRAINT_MEMCG",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podef91e487_dec5_4613_800b_eb23e1a1617d.slice",
            "/kubepods.slice/kubepods-urstable.slice/kubepods-burstable-podef91e487_dec5_4613_800b_eb23e1a1617d.slice/cri-containerd-100093783c22a3ae1a42e21dd887b7c26eef52d56ba44c7273ef54507b6efe7c.scope",
            66852088,
            None,
        ),
    ],
    "excerpts/08-esooms-memcg-syslog-grep.log": [
        (
            99190,
            "apache2",
            "CONSTRAINT_MEMCG",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12be0f08_da27_11e9_99ac_069044000888.slice",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12be0f08_da27_11e9_99ac_069044000888.slice/docker-4304197e5a46240357356250fcaf602bb4930f1b87157b73ae5e240f4a67a150.scope",
            None,
            None,
        ),
    ],
    "excerpts/09-esooms-memcg-dmesg-grep.log": [
        (
            8308,
            "java",
            "CONSTRAINT_MEMCG",
            "/kubepods/burstable/podaf389229-5fc5-4617-ae95-9160d576eb49",
            "/kubepods/burstable/podaf389229-5fc5-4617-ae95-9160d576eb49/3b3d031aca1bab63c359a8aac8c18e373ac90373faf12c69e5225aec01fc9c84",
            None,
            None,
        ),
    ],
    "excerpts/10-esooms-oomkill-summary-only.log": [
        (
            10506,
            "ruby",
            "CONSTRAINT_MEMCG",
            "/kubepods/burstable/pod792adfde-d139-4c9c-a89e-ae94f36ea69d/7a982186b58cec345c4a3f635809c7e04afc930453a5dbb5cbc9d4d49f662761",
            "/kubepods/burstable/pod792adfde-d139-4c9c-a89e-ae94f36ea69d/7a982186b58cec345c4a3f635809c7e04afc930453a5dbb5cbc9d4d49f662761",
            None,
            None,
        ),
    ],
    "excerpts/11-ssup2-memcg-dmesg-4.x.log": [
        (27881, "stress", "CONSTRAINT_MEMCG", None, None, 7152284, None),
    ],
    "excerpts/12-ltp-memcg-v1-5.8.log": [
        (19289, "memcg_process", "CONSTRAINT_MEMCG", "/ltp_19257", "/ltp_19257", 84, 0),
    ],
    "excerpts/13-icloudnative-k8s-memcg-4.15.log": [
        (
            32308,
            "stress",
            "CONSTRAINT_MEMCG",
            "/kubepods/burstable/podbc001ffa-68fc-11e9-92d7-5ef9efd9374c",
            "/kubepods/burstable/podbc001ffa-68fc-11e9-92d7-5ef9efd9374c/a2ed67c63e828da3849bf9f506ae2b36b4dac5b402a57f2981c9bdc07b23e672",
            99620,
            None,
        ),
    ],
    "excerpts/14-blog-memcg-v2-dmesg-decode-5.14.log": [
        (
            1586608,
            "xray",
            "CONSTRAINT_MEMCG",
            "/kubepods.slice/kubepods-pod089f25ee_a41a_414c_a028_71a38dfb30d3.slice/cri-containerd-c3f1de0d0969e5d3c6758d2e59be98d4dc8ba0367af77f52b09d15225139c74f.scope",
            "/kubepods.slice/kubepods-pod089f25ee_a41a_414c_a028_71a38dfb30d3.slice/cri-containerd-c3f1de0d0969e5d3c6758d2e59be98d4dc8ba0367af77f52b09d15225139c74f.scope",
            26372,
            -997,
        ),
    ],
    "excerpts/15-course-oomgroup-truncated-6.1.log": [
        (10843, "prometheus-conf", "CONSTRAINT_NONE", "/", None, 5064, 997),
        (
            10843,
            "prometheus-conf",
            "CONSTRAINT_NONE",
            "/",
            "/kubepods/burstable/pod3902af1e-8ce1-42e1-a2a5-dc04f4240c4f/ed9dcd836d0c7e3e379b2387ef5e15e70f1c932dbce0fce685606bb2f4d62036",
            5064,
            997,
        ),
        (115727, "memory_leak", "CONSTRAINT_NONE", "/", None, 11724804, 200),
    ],
    "excerpts/16-k3s-blog-global-syslog.log": [
        (
            19227,
            "entry",
            "CONSTRAINT_NONE",
            "/",
            "/kubepods/besteffort/podbe1e663f-f7a1-4b90-bdfd-bb30afdf7c37/53463dbb01e95cfa79e16677e4a67317688384cc5b6c54d416b48dce0f406b4c",
            120,
            None,
        ),
    ],
    "excerpts/17-ebpfagent-devkmsg-raw.log": [],
    "excerpts/18-playpen-journal-ellipsized-6.8.log": [
        (483880, "python3", "CONSTRAINT_MEMCG", None, None, None, None),
    ],
    "excerpts/19-linuxmm-global-midreport-4.9.log": [
        (7267, "a.out", None, None, None, 84, None),
        (7268, "a.out", None, None, None, 84, None),
        (7269, "a.out", None, None, None, None, None),
    ],
    "excerpts/20-linuxmm-memcg-no-killable-4.19rc.log": [],
    "excerpts/21-bpf-oom-patch-custom-constraint-6.16.log": [
        (
            675,
            "test_progs",
            "CONSTRAINT_BPF_PSI_MEM",
            "/cgroup-test-work-dir673/oom_test/cg2",
            "/cgroup-test-work-dir673/oom_test/cg2",
            42848,
            0,
        ),
    ],
    "excerpts/22-lkml-cpuset-movable-node-5.8.log": [
        (
            4100,
            "containerd",
            "CONSTRAINT_CPUSET",
            "/",
            "/system.slice/containerd.service",
            51184,
            0,
        ),
    ],
    "excerpts/23-lkml-cpuset-wrapped-mixed-prefix.log": [
        (
            1968,
            "memkiller",
            "CONSTRAINT_CPUSET",
            "/",
            "/user.slice/user-0.slice/session-4.scope",
            1971712,
            0,
        ),
    ],
    "excerpts/24-stackoverflowgo-journal-grep-docker-v2-5.18.log": [
        (
            72184,
            "stackoverflow-g",
            "CONSTRAINT_MEMCG",
            "/system.slice/docker-b1d583ef4ec7a04cda0c0e9a6804d0934bf00d88b84141570cf8251e808f1905.scope",
            "/system.slice/docker-b1d583ef4ec7a04cda0c0e9a6804d0934bf00d88b84141570cf8251e808f1905.scope",
            259204,
            0,
        ),
    ],
    "excerpts/25-dcos-docs-memcg-journal-blanklines.log": [
        (16883, "oomApp", "CONSTRAINT_MEMCG", None, None, 57784, None),
    ],
    "excerpts/26-msdocs-rhel7-syslog-uid-comma.log": [
        (45465, "tail", None, None, None, 7420324, None),
    ],
    "excerpts/27-intelgfx-global-no-cpuset-5.8rc1.log": [
        (27368, "chromium", "CONSTRAINT_NONE", None, None, 647056, 300),
    ],
    "excerpts/28-blog-rhel6-lxc-memcg-2.6.32.log": [
        (215701, "java", "CONSTRAINT_MEMCG", "/LXC011175068174", "/LXC011175068174", 7152432, None),
    ],
    "excerpts/29-blog-k8s-memcg-v1-dmesgT-zh-locale.log": [
        (
            50624,
            "java",
            "CONSTRAINT_MEMCG",
            "/kubepods/burstable/pod28fcb1a0-a45c-44e7-b9bf-e3b9360bedba",
            "/kubepods/burstable/pod28fcb1a0-a45c-44e7-b9bf-e3b9360bedba/3e5e5eab87df615f4777e6f7f261a7fb62f4a7ee5bc3e25e3a5b5223ccd368fe",
            8225208,
            969,
        ),
    ],
    "excerpts/30-linuxmm-fedora-comm-with-space-4.15.log": [
        (2279, "Web Content", None, None, None, 1694156, None),
    ],
    "excerpts/31-blog-runc-vendor-el7-empty-constraint-3.10.log": [
        (
            12788,
            "runc:[2:INIT]",
            "CONSTRAINT_MEMCG",
            "/kubepods/burstable/pod6c4333b3-a663-11ea-b39f-6c92bf85beda",
            "/kubepods/burstable/pod6c4333b3-a663-11ea-b39f-6c92bf85beda/bbd5e4b5f9c13666dd0ec7ff7afb2c4c2b0ede40a4adf1de43cc31c606f283f5",
            3296,
            None,
        ),
    ],
    "excerpts/32-lkft-arm-mailwrapped-no-cpuset-5.7next.log": [
        (268, "polkitd", "CONSTRAINT_NONE", "/", "/", 2948, 0),
    ],
    "excerpts/33-blog-vllm-build-global-dmesgT.log": [
        (8456, "cudafe++", "CONSTRAINT_NONE", "/", "/", 1259364, 0),
    ],
}


def _kills(rel: str) -> list[KernelEvent]:
    path = data_file("oom-logs/" + rel)
    return [
        e for e in saved_events(read_lines([path.read_bytes()]), rel) if e["kind"] == "oom_kill"
    ]


def _row(e: KernelEvent) -> tuple[Any, ...]:
    return (
        e.get("pid"),
        e.get("comm"),
        e.get("constraint"),
        e.get("oom_memcg"),
        e.get("cgroup"),
        e.get("anon_rss_kb"),
        e.get("oom_score_adj"),
    )


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_real_log_yields_the_kills_it_names(rel: str) -> None:
    assert [_row(e) for e in _kills(rel)] == EXPECTED[rel], rel


def test_every_real_log_has_expectations() -> None:
    """A file added to shared/data without a case here fails, naming it."""
    root = DATA / "oom-logs"
    if not root.is_dir():
        pytest.skip(f"real third-party data not found at {root}")
    found = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix in (".log", ".txt")
        and p.name not in ("README.md", "MANIFEST.tsv")
    }
    assert found == set(EXPECTED)


# (file, pid of the kill, words its notes must hold): the log's gaps said, not guessed
NOTED = [
    ("excerpts/10-esooms-oomkill-summary-only.log", 10506, "only the oom-kill summary"),
    ("excerpts/06-harvester-memcg-syslog-5.14.log", 39079, "only the oom-kill summary"),
    ("excerpts/08-esooms-memcg-syslog-grep.log", 99190, "only the 'Kill process' line"),
    ("excerpts/09-esooms-memcg-dmesg-grep.log", 8308, "only the 'Kill process' line"),
    ("excerpts/19-linuxmm-global-midreport-4.9.log", 7269, "only the 'Kill process' line"),
    ("excerpts/19-linuxmm-global-midreport-4.9.log", 7267, "report began before the log"),
    ("excerpts/31-blog-runc-vendor-el7-empty-constraint-3.10.log", 12788, "prints no constraint"),
    (
        "excerpts/31-blog-runc-vendor-el7-empty-constraint-3.10.log",
        12788,
        "chose pid 12800 and killed pid 12788",
    ),
    (
        "excerpts/15-course-oomgroup-truncated-6.1.log",
        10843,
        "cut short at 'task_memcg=/kubepods/burstable/pod3902af1e-8c>'",
    ),
    ("excerpts/18-playpen-journal-ellipsized-6.8.log", 483880, "'Killed process' line is cut"),
    ("excerpts/18-playpen-journal-ellipsized-6.8.log", 483880, "cut short at 'mems_allowed=0...'"),
]


@pytest.mark.parametrize(("rel", "pid", "words"), NOTED)
def test_what_a_fragment_leaves_unsaid_is_said(rel: str, pid: int, words: str) -> None:
    kill = worded(next(e for e in _kills(rel) if e.get("pid") == pid))
    assert any(words in n for n in kill.get("notes", [])), (rel, kill.get("notes"))


@pytest.mark.parametrize(
    "rel",
    [
        "boom_example_oomkill_el9.txt",
        "excerpts/12-ltp-memcg-v1-5.8.log",
        "excerpts/22-lkml-cpuset-movable-node-5.8.log",
        "oomanalyser_example_proxmox_cgroup_oom.txt",
    ],
)
def test_a_whole_report_has_no_notes(rel: str) -> None:
    assert [e.get("notes") for e in _kills(rel)] == [None]


def test_summary_fields_in_another_order_or_missing() -> None:
    from memcgctl.logic.oomlines import parse_summary

    s = parse_summary(
        "oom-kill:task=a,b,pid=7,uid=0,oom_memcg=/x,constraint=CONSTRAINT_MEMCG,"
        "mems_allowed=0-1,3,task_memcg=/x/y"
    )
    assert s is not None
    assert (s["comm"], s["pid"], s["uid"], s["constraint"]) == ("a,b", 7, 0, "CONSTRAINT_MEMCG")
    assert (s["oom_memcg"], s["task_memcg"]) == ("/x", "/x/y")
    s = parse_summary("oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),task=x,pid=1,uid=2")
    assert s is not None and (s["oom_memcg"], s["global_oom"], s["pid"]) == (None, False, 1)
    assert parse_summary("oom-kill:nothing we know") is None


def test_several_grepped_fragments_are_several_kills() -> None:
    """``dmesg | grep -e oom-kill -e 'Kill process'``: each line names a kill of its own
    (the lines are the real ones of excerpts 10, 31 and 19, put together)."""
    text = (
        "[10657070.816698] oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=7a98,"
        "mems_allowed=0,oom_memcg=/kubepods/burstable/pod792a,task_memcg=/kubepods/burstable/"
        "pod792a/7a98,task=ruby,pid=10506,uid=1000\n"
        "[10657071.000000] oom-kill:,cpuset=bbd5,mems_allowed=0-1,oom_memcg=/kubepods/burstable/"
        "pod6c43,task_memcg=/kubepods/burstable/pod6c43/bbd5,task=runc:[2:INIT],pid=12800,uid=0\n"
        "[ 2802.650237] Out of memory: Kill process 7268 (a.out) score 999 or sacrifice child\n"
        "[ 2804.432524] Out of memory: Kill process 7269 (a.out) score 999 or sacrifice child\n"
    )
    kills = [e for e in saved_events(read_lines([text.encode()])) if e["kind"] == "oom_kill"]
    assert [(e["pid"], e["comm"], e.get("oom_memcg")) for e in kills] == [
        (10506, "ruby", "/kubepods/burstable/pod792a"),
        (12800, "runc:[2:INIT]", "/kubepods/burstable/pod6c43"),
        (7268, "a.out", None),
        (7269, "a.out", None),
    ]
    assert all(any("no 'Killed process' line" in n for n in worded(e)["notes"]) for e in kills)
    assert [e["uptime_s"] for e in kills] == [10657070.816698, 10657071.0, 2802.650237, 2804.432524]
