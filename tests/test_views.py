"""The rendering layer's field lists (memcgctl.render.views) and the table/tree helpers they
are drawn with (memcgctl.render.output): tree guides made once, aligned lines without a table
library, one Column per Field."""

from __future__ import annotations

import pytest

from memcgctl.render.output import (
    Field,
    Output,
    TreeNode,
    columns_of,
    print_aligned,
    print_tree,
    with_guides,
)
from memcgctl.render.views import (
    BADNESS_FIELDS,
    CGROUP_FIELDS,
    COUNTER_FIELDS,
    DELAY_FIELDS,
    PROCESS_FIELDS,
    RunnerUp,
    badness_setting,
    change_line,
    delay_setting,
    runner_up_fields,
    tree_rows,
)
from memcgctl.state.store import Setting
from memcgctl.vocab.cgpath import CgroupPath
from tests.snapbuild import P, build

A = CgroupPath("/a")


def test_with_guides_draws_systemd_cgls_guides() -> None:
    tree: dict[str, list[str]] = {
        "r": ["a", "b"],
        "a": ["a1", "a2"],
        "a1": [],
        "a2": [],
        "b": ["b1"],
        "b1": [],
    }
    rows = with_guides("r", lambda n: tree[n])
    assert [g + n for g, n in rows] == [
        "r",
        "├─ a",
        "│  ├─ a1",
        "│  └─ a2",
        "└─ b",
        "   └─ b1",
    ]


def test_print_tree_plain_uses_the_same_guides(capsys: pytest.CaptureFixture[str]) -> None:
    root = TreeNode("top", (TreeNode("x", (TreeNode("y"),)), TreeNode("z")))
    print_tree(Output(plain=True), root)
    assert capsys.readouterr().out == "top\n├─ x\n│  └─ y\n└─ z\n"


def test_tree_rows_name_the_root_by_path_and_the_rest_by_name() -> None:
    snap = build({"/a": {}, "/a/b": {}, "/a/c": {}}, [])
    labels = [r.label for r in tree_rows(snap, A)]
    assert labels == ["/a", "├─ b", "└─ c"]
    assert [r.cgroup.path for r in tree_rows(snap, A)] == ["/a", "/a/b", "/a/c"]


def test_field_makes_a_column_with_short_cells() -> None:
    f: Field[int] = Field("N", str, right=True, priority=2, short="n", short_cell=hex)
    (col,) = columns_of([f], [1, 20])
    assert col.cells == ["1", "20"] and col.short_cells == ["0x1", "0x14"]
    assert (col.header, col.right, col.priority, col.short) == ("N", True, 2, "n")


def test_print_aligned_pads_left_and_right(capsys: pytest.CaptureFixture[str]) -> None:
    fields: list[Field[tuple[str, int]]] = [
        Field("NAME", lambda t: t[0]),
        Field("N", lambda t: str(t[1]), right=True),
        Field("END", lambda t: ""),
    ]
    print_aligned(fields, [("a", 100), ("long", 2)])
    assert capsys.readouterr().out == "NAME    N  END\na     100\nlong    2\n"


def test_print_aligned_prints_the_header_alone(capsys: pytest.CaptureFixture[str]) -> None:
    print_aligned(DELAY_FIELDS, [])
    assert capsys.readouterr().out == "CGROUP  DELAY  SOURCE\n"


def test_badness_and_delay_entries(capsys: pytest.CaptureFixture[str]) -> None:
    print_aligned(
        BADNESS_FIELDS,
        [
            {"cgroup": "/a", "badness": 100, "badness_source": "trusted"},
            {"pid": 7, "comm": "sh", "badness": 500, "badness_source": "default"},
        ],
    )
    print_aligned(
        DELAY_FIELDS, [{"cgroup": "/a", "oom_delay_ms": 2000, "oom_delay_source": "user"}]
    )
    assert capsys.readouterr().out.splitlines() == [
        "TARGET      BADNESS  SOURCE",
        "/a          100      trusted",
        "pid 7 (sh)  500      default",
        "CGROUP  DELAY  SOURCE",
        "/a      2s     user",
    ]


def test_object_field_lists_have_the_documented_headers() -> None:
    assert [f.header for f in CGROUP_FIELDS] == [
        "CGROUP", "USAGE", "LIMIT", "BADNESS", "DELAY", "OOM.GROUP", "UNDER_OOM", "KILLS",
        "TASKS",
    ]  # fmt: skip
    assert [f.header for f in PROCESS_FIELDS] == [
        "PID", "COMM", "RSS", "SWAP", "BADNESS", "OOM_ADJ", "OOM_SCORE", "CGROUP",
    ]  # fmt: skip
    snap = build({"/a": {"badness": 900}}, [P(10, "/a", rss=2048, badness=800)])
    (cg_bad,) = (c for c in columns_of(CGROUP_FIELDS, tree_rows(snap, A)) if c.short == "BAD")
    assert cg_bad.short_cells is not None and cg_bad.cells[0].startswith("900 (")
    procs = list(snap.subtree_processes(A))
    (p_bad,) = (c for c in columns_of(PROCESS_FIELDS, procs) if c.header == "BADNESS")
    assert p_bad.cells == ["800 (process)"] and p_bad.short_cells == ["800p"]


def test_change_lines() -> None:
    line = change_line(
        "/a", "badness", False, badness_setting(Setting(None, "default")),
        badness_setting(Setting(100, "trusted")),
    )  # fmt: skip
    assert line == "/a: set badness 100 (trusted), was 500 (default)"
    line = change_line(
        "/a", "OOM delay", True, delay_setting(Setting(None, "default")),
        delay_setting(Setting(2000, "user")),
    )  # fmt: skip
    assert line == "/a: would set OOM delay 2s (user), was off"


def test_runner_up_fields_name_the_value_by_policy_and_show_the_group() -> None:
    snap = build({"/a": {}}, [P(10, "/a", rss=2048)])
    (p,) = snap.subtree_processes(A)
    cols = columns_of(runner_up_fields(kernel=False), [RunnerUp(1, p, 500, group_size=3)])
    assert [c.header for c in cols] == ["#", "PID", "COMM", "CGROUP", "BADNESS", "OOM_ADJ", "RSS"]
    assert [c.cells[0] for c in cols] == ["1", "10", "p10", "/a", "500", "0", "2.0M +2 (oom.group)"]
    assert [i for i, c in enumerate(cols) if c.right] == [0, 1, 4, 5, 6]
    assert columns_of(runner_up_fields(kernel=True), [])[4].header == "POINTS"


def test_counter_fields(capsys: pytest.CaptureFixture[str]) -> None:
    entry = {
        "cgroup": "/a",
        "local": {"oom_kill": 2},
        "hierarchical": None,
        "by_cause": {"system": 1, "memcg": 0, "user": 3},
        "complete": False,
    }
    print_aligned(COUNTER_FIELDS, [entry])
    assert capsys.readouterr().out.splitlines() == [
        "CGROUP  LOCAL  HIER  SYSTEM  MEMCG  USER  COMPLETE",
        "/a          2     -       1      0     3  no",
    ]
