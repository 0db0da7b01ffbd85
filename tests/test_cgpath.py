"""CgroupPath: normalisation, the tree (parent, name, child), the subtree test, ROOT/HOST."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memcgctl.vocab.cgpath import HOST, ROOT, CgroupPath, HostScope

# cgroup names: anything kernfs accepts (no "/", no NUL, not "." or "..")
names = st.text(
    alphabet=st.characters(blacklist_characters="/\0", blacklist_categories=["Cs"]),
    min_size=1,
    max_size=8,
).filter(lambda n: n not in (".", ".."))
paths = st.lists(names, max_size=5).map(lambda ps: CgroupPath("/" + "/".join(ps)))


def test_normalises() -> None:
    assert CgroupPath("/") == "/"
    assert CgroupPath("") == "/"
    assert CgroupPath("//") == "/"
    assert CgroupPath("a/b") == "/a/b"
    assert CgroupPath("/a//b/") == "/a/b"
    assert CgroupPath("/a...b") == "/a...b"


@pytest.mark.parametrize("bad", ["/a/..", "../a", "/a/./b", ".", "/a\0b"])
def test_refuses_dot_dot_and_nul(bad: str) -> None:
    with pytest.raises(ValueError):
        CgroupPath(bad)
    assert CgroupPath.parse(bad) is None


def test_parse_takes_any_field() -> None:
    assert CgroupPath.parse("/a/") == "/a"
    assert CgroupPath.parse(None) is None
    assert CgroupPath.parse(3) is None
    with pytest.raises(TypeError):
        CgroupPath(3)  # type: ignore[arg-type]


def test_is_still_the_same_string() -> None:
    cg = CgroupPath("/a/b")
    assert isinstance(cg, str)
    assert json.dumps({"cgroup": cg}) == '{"cgroup": "/a/b"}'
    assert f"{cg}" == "/a/b" and str(cg) == "/a/b" and repr(cg) == "'/a/b'"
    assert {"/a/b": 1}[cg] == 1
    assert sorted([CgroupPath("/b"), "/a"]) == ["/a", "/b"]
    assert CgroupPath(cg) is cg


def test_parent_name_parts_depth() -> None:
    assert ROOT.parent is None
    assert ROOT.name == "/" and ROOT.parts == () and ROOT.depth == 0 and ROOT.is_root
    a = CgroupPath("/a")
    assert a.parent == "/" and a.parent is not None and a.parent.is_root
    ab = CgroupPath("/a/b")
    assert ab.parent == "/a" and isinstance(ab.parent, CgroupPath)
    assert ab.name == "b" and ab.parts == ("a", "b") and ab.depth == 2
    assert not ab.is_root
    assert ab.ancestors() == ["/a", "/"]
    assert ROOT.ancestors() == []


def test_child() -> None:
    assert ROOT.child("a") == "/a"
    assert CgroupPath("/a").child("b") == "/a/b"
    assert isinstance(ROOT.child("a"), CgroupPath)
    for bad in ("", ".", "..", "a/b", "/", "a\0"):
        with pytest.raises(ValueError):
            ROOT.child(bad)


def test_subtree() -> None:
    a = CgroupPath("/a")
    assert a.contains("/a") and a.contains("/a/b") and a.contains(CgroupPath("/a/b/c"))
    assert not a.contains("/ab") and not a.contains("/") and not a.contains("/b/a")
    assert ROOT.contains("/anything") and ROOT.contains("/")
    assert ROOT.contains(a)


def test_host_is_not_a_cgroup() -> None:
    assert HOST == "/" and json.dumps(HOST) == '"/"'
    assert isinstance(HOST, HostScope) and not isinstance(HOST, CgroupPath)
    assert not isinstance(ROOT, HostScope)


@given(paths)
def test_constructor_is_idempotent(p: CgroupPath) -> None:
    assert CgroupPath(str(p)) == p
    assert p.startswith("/") and (p == "/" or not p.endswith("/")) and "//" not in p


@given(paths, names)
def test_child_parent_name_round_trip(p: CgroupPath, name: str) -> None:
    c = p.child(name)
    assert c.parent == p and c.name == name
    assert c.depth == p.depth + 1 and c.parts == (*p.parts, name)
    assert p.contains(c) and not c.contains(p)
    assert CgroupPath("/".join(c.parts)) == c


@given(paths, paths)
def test_contains_is_the_component_prefix(a: CgroupPath, b: CgroupPath) -> None:
    assert a.contains(b) == (b.parts[: a.depth] == a.parts)
    if a.contains(b):
        assert a == b or a in b.ancestors()


@given(paths)
def test_ancestors_end_at_the_root(p: CgroupPath) -> None:
    anc = p.ancestors()
    assert len(anc) == p.depth
    assert all(x.contains(p) for x in anc)
    assert (anc[-1] if anc else p) == ROOT


def test_proc_paths_become_cgroup_paths() -> None:
    from pathlib import Path

    from memcgctl.kernel.cgroupfs import CgroupFs
    from memcgctl.kernel.hierarchy import Hierarchy
    from memcgctl.vocab.errors import UsageProblem

    fs = CgroupFs(Hierarchy(Path("/nonexistent"), 2, True, "/pod1"))
    assert fs.from_proc_path("/pod1/app") == "/app"
    assert isinstance(fs.from_proc_path("/pod1/app"), CgroupPath)
    assert fs.from_proc_path("/pod1") is not None and fs.from_proc_path("/pod1").is_root
    assert fs.from_proc_path("/pod10/x") == "/pod10/x"
    # inside a cgroup namespace the mount's root may lie above ours: "/.." is stripped
    ns = CgroupFs(Hierarchy(Path("/nonexistent"), 2, True, "/.."))
    assert ns.from_proc_path("/../sibling") == "/sibling"
    with pytest.raises(UsageProblem, match=r"'\.\.' would leave"):
        fs.from_proc_path("/../elsewhere")
