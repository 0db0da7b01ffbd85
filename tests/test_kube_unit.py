"""memcgctl.logic.kube: the pod list, the priority mapping, pod cgroup paths, reconcile."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memcgctl.logic.kube import (
    BADNESS_KEY,
    DELAY_KEY,
    POD_KEY,
    QOS_BESTEFFORT,
    QOS_BURSTABLE,
    QOS_GUARANTEED,
    QOS_RANK,
    SYSTEM_CLUSTER_CRITICAL,
    SYSTEM_NODE_CRITICAL,
    USER_PRIORITY_MAX,
    USER_PRIORITY_MIN,
    Change,
    Current,
    Pod,
    PodCgroup,
    PodListError,
    default_badness,
    parse_badness_annotation,
    parse_pod_cgroup,
    parse_pod_list,
    pod_settings,
    reconcile,
)
from memcgctl.render.kubewords import problem_text
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.structs import replace

DATA = Path(__file__).parent / "data" / "kube"
QOSES = [QOS_BESTEFFORT, QOS_BURSTABLE, QOS_GUARANTEED]
priorities = st.one_of(
    st.integers(USER_PRIORITY_MIN, USER_PRIORITY_MAX),
    st.sampled_from([SYSTEM_CLUSTER_CRITICAL, SYSTEM_NODE_CRITICAL, 0, -1, 1, 1000]),
)


# -- the mapping ----------------------------------------------------------------


@given(priorities, priorities, st.sampled_from(QOSES))
def test_mapping_is_monotonic_in_priority(a: int, b: int, qos: str) -> None:
    lo, hi = sorted((a, b))
    assert default_badness(lo, qos) <= default_badness(hi, qos)


@given(priorities, st.sampled_from(QOSES), st.sampled_from(QOSES))
def test_mapping_is_monotonic_in_qos(p: int, q1: str, q2: str) -> None:
    worse, better = sorted((q1, q2), key=QOS_RANK.__getitem__)
    if worse != better:
        assert default_badness(p, worse) < default_badness(p, better)


@given(priorities, st.sampled_from(QOSES))
def test_mapping_stays_below_never(p: int, qos: str) -> None:
    assert 1 <= default_badness(p, qos) < 1000


@given(st.integers(USER_PRIORITY_MIN, USER_PRIORITY_MAX), st.sampled_from(QOSES))
def test_classes_are_ordered(p: int, qos: str) -> None:
    """system-node-critical > system-cluster-critical > every user class > BestEffort."""
    node = min(default_badness(SYSTEM_NODE_CRITICAL, q) for q in QOSES)
    cluster = [default_badness(SYSTEM_CLUSTER_CRITICAL, q) for q in QOSES]
    assert max(cluster) < node
    assert default_badness(p, qos) < min(cluster)
    if qos != QOS_BESTEFFORT:
        assert default_badness(p, QOS_BESTEFFORT) < default_badness(USER_PRIORITY_MIN, qos)


def test_common_priorities_are_told_apart() -> None:
    values = [-1000, -10, 0, 1000, 100_000, 1_000_000, USER_PRIORITY_MAX]
    got = [default_badness(p, QOS_BURSTABLE) for p in values]
    assert got == sorted(got) and len(set(got)) == len(got)
    assert default_badness(None, QOS_BURSTABLE) == default_badness(0, QOS_BURSTABLE)
    assert default_badness(0, "") == default_badness(0, QOS_BURSTABLE)


@pytest.mark.parametrize("text", ["-1", "1001", " 5", "5 ", "+5", "５", "1e2", "", "0x10", "10000"])
def test_badness_annotation_is_strict(text: str) -> None:
    with pytest.raises(ValueError):
        parse_badness_annotation(text)


@pytest.mark.parametrize("text,value", [("0", 0), ("1000", 1000), ("0042", 42)])
def test_badness_annotation_accepts(text: str, value: int) -> None:
    assert parse_badness_annotation(text) == value


def _pod(uid: str = "0" * 8 + "-aaaa", prio: int = 0, qos: str = QOS_BURSTABLE, **ann: str) -> Pod:
    annotations = {f"memcgctl.io/{k.replace('_', '-')}": v for k, v in ann.items()}
    return Pod(uid, "ns", f"pod-{uid[:4]}", prio, "", qos, annotations)


def test_annotations_override_and_bad_ones_are_reported() -> None:
    s = pod_settings(_pod(badness="1000", oom_delay="2s"))
    assert (s.badness, s.badness_source, s.delay_ms, s.problems) == (1000, "annotation", 2000, ())
    s = pod_settings(_pod(badness="５0", oom_delay="soon"))
    assert s.badness == default_badness(0, QOS_BURSTABLE) and s.badness_source == "priority"
    assert s.delay_ms is None and len(s.problems) == 2
    bad_badness, bad_delay = (problem_text(p) for p in s.problems)
    assert bad_badness.startswith("ns/pod-0000: ") and bad_badness.endswith(
        f"; using {s.badness} from its priority"
    )
    assert bad_delay.startswith("ns/pod-0000: ") and bad_delay.endswith("; no delay")
    assert "soon" in bad_delay
    assert pod_settings(_pod(oom_delay="off")).delay_ms is None
    assert pod_settings(_pod(oom_delay="0")).delay_ms == 0


# -- pod lists --------------------------------------------------------------------


def test_api_server_list() -> None:
    pods, problems = parse_pod_list(
        json.loads((DATA / "apiserver-list-constructed.json").read_text())
    )
    assert problems == []
    assert [(p.label, p.uid, p.priority, p.qos) for p in pods] == [
        ("batch/etl-nightly-7f9c2", "3f1c9a52-0b7d-4e2a-9c61-5d8e2f4a7b10", 0, QOS_BESTEFFORT)
    ]


def test_kubelet_shaped_list() -> None:
    pods, problems = parse_pod_list(
        json.loads((DATA / "kubelet-node-constructed.json").read_text())
    )
    assert problems == []
    by_name = {p.name: p for p in pods}
    static = by_name["kube-apiserver-node-1"]
    assert static.uid == "ea28308f06c4898081f42d3ce5e34ad5"
    assert (
        static.priority == SYSTEM_NODE_CRITICAL and static.priority_class == "system-node-critical"
    )
    ranked = sorted(pods, key=lambda p: pod_settings(p).badness)
    assert ranked[0].name.startswith("ci-runner")  # BestEffort, priority 0
    assert ranked[-1].name == "postgres-0"  # badness 1000 by annotation


def test_mirror_pod_is_known_by_its_static_uid() -> None:
    item = {
        "metadata": {
            "name": "etcd-cp",
            "namespace": "kube-system",
            "uid": "11111111-2222-3333-4444-555555555555",
            "annotations": {"kubernetes.io/config.mirror": "7e2a35b08091031407766d7fb4174335"},
        },
        "spec": {"priority": SYSTEM_NODE_CRITICAL},
        "status": {"qosClass": "Burstable"},
    }
    pods, _ = parse_pod_list({"kind": "PodList", "items": [item]})
    assert pods[0].uid == "7e2a35b08091031407766d7fb4174335"


@pytest.mark.parametrize(
    "doc", [[], {"items": {}}, {"kind": "NodeList", "items": []}, "x", None, {"kind": "PodList"}]
)
def test_not_a_pod_list(doc: object) -> None:
    with pytest.raises(PodListError):
        parse_pod_list(doc)


def test_bad_items_are_skipped_with_a_reason() -> None:
    items = [
        1,
        {"spec": {}},
        {"metadata": {"uid": "../../etc"}},
        {"metadata": {"uid": "12345678-aaaa"}, "spec": {"priority": "high"}},
        {"metadata": {"uid": "12345678-aaaa"}, "spec": {"priority": True}},
        {"metadata": {"uid": "12345678-bbbb", "name": "ok"}},
    ]
    pods, problems = parse_pod_list({"items": items})
    assert [p.name for p in pods] == ["ok"] and len(problems) == 5


# -- pod cgroup paths -------------------------------------------------------------

UID = "8f1152d3-2c0c-499a-8c18-9be44c6b0a84"
UID_ = UID.replace("-", "_")


@pytest.mark.parametrize(
    "path,qos,driver,tier",
    [
        (f"/kubepods.slice/kubepods-pod{UID_}.slice", QOS_GUARANTEED, "systemd", None),
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
            QOS_BURSTABLE,
            "systemd",
            "/kubepods.slice/kubepods-burstable.slice",
        ),
        (
            f"/x/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice",
            QOS_BESTEFFORT,
            "systemd",
            "/x/kubepods.slice/kubepods-besteffort.slice",
        ),
        (f"/kubepods/pod{UID}", QOS_GUARANTEED, "cgroupfs", None),
        (f"/kubepods/burstable/pod{UID}", QOS_BURSTABLE, "cgroupfs", "/kubepods/burstable"),
        (f"/kubepods/besteffort/pod{UID}", QOS_BESTEFFORT, "cgroupfs", "/kubepods/besteffort"),
    ],
)
def test_pod_cgroup_paths(path: str, qos: str, driver: str, tier: str | None) -> None:
    cg = CgroupPath(path)
    want = PodCgroup(cg, UID, qos, driver, CgroupPath(tier) if tier is not None else None)
    assert parse_pod_cgroup(cg) == want


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/kubepods.slice",
        "/kubepods.slice/kubepods-burstable.slice",
        f"/kubepods.slice/kubepods-burstable-pod{UID_}.slice",  # tier slice missing
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-burstable-pod{UID_}.slice",
        f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-abc.scope",
        f"/kubepods/burstable/pod{UID}/0123abcd",
        f"/system.slice/kubepods-pod{UID_}.slice",
        f"/pod{UID}",
        f"/batch/pod{UID}",
        f"/kubepods/other/pod{UID}",
        f"/kubepods/pod{UID_}",
        "/kubepods/podx",
    ],
)
def test_not_pod_cgroups(path: str) -> None:
    assert parse_pod_cgroup(CgroupPath(path)) is None


# -- reconcile --------------------------------------------------------------------


def _cg(path: str) -> PodCgroup:
    pc = parse_pod_cgroup(CgroupPath(path))
    assert pc is not None
    return pc


def test_reconcile_sets_pods_and_tiers_and_nothing_else() -> None:
    low = _pod("aaaaaaaa-0001", prio=-100, qos=QOS_BURSTABLE)
    high = _pod("aaaaaaaa-0002", prio=1000, qos=QOS_BURSTABLE, oom_delay="1s")
    guaranteed = _pod("aaaaaaaa-0003", prio=0, qos=QOS_GUARANTEED)
    tier = "/kubepods/burstable"
    cgs = [
        _cg(f"/kubepods/burstable/pod{low.uid}"),
        _cg(f"/kubepods/burstable/pod{high.uid}"),
        _cg(f"/kubepods/pod{guaranteed.uid}"),
        _cg("/kubepods/burstable/podaaaaaaaa-9999"),  # not listed: left alone
    ]
    plan = reconcile([low, high, guaranteed], cgs, {})
    got = {(c.cgroup, c.key): c.new for c in plan.changes}
    b = pod_settings
    pods = [low, high, guaranteed]
    assert got == {
        (f"/kubepods/burstable/pod{low.uid}", BADNESS_KEY): b(low).badness,
        (f"/kubepods/burstable/pod{high.uid}", BADNESS_KEY): b(high).badness,
        (f"/kubepods/burstable/pod{high.uid}", DELAY_KEY): 1000,
        (f"/kubepods/pod{guaranteed.uid}", BADNESS_KEY): b(guaranteed).badness,
        (tier, BADNESS_KEY): b(low).badness,
        **{(str(c.path), POD_KEY): p.label for c, p in zip(cgs, pods, strict=False)},
    }
    assert set(plan.matched) == {c.path for c in cgs[:3]}
    # once applied, nothing more to do
    current = applied({}, plan.changes)
    assert reconcile(pods, cgs, current).changes == []
    # the delay annotation removed: the delay goes; the pod gone: its tier follows the rest
    high2 = _pod(high.uid, prio=1000, qos=QOS_BURSTABLE)
    changes = reconcile([high2, guaranteed], cgs, current).changes
    assert {(c.cgroup, c.key, c.new) for c in changes} == {
        (f"/kubepods/burstable/pod{high.uid}", DELAY_KEY, None),
        (tier, BADNESS_KEY, b(high).badness),
    }


def applied(current: dict[CgroupPath, Current], changes: list[Change]) -> dict[CgroupPath, Current]:
    out = dict(current)
    for c in changes:
        now = out.get(c.cgroup, Current(None, None))
        if c.key == POD_KEY:
            assert c.new is None or isinstance(c.new, str)
            out[c.cgroup] = replace(now, pod=c.new)
        else:
            assert c.new is None or isinstance(c.new, int)
            if c.key == BADNESS_KEY:
                out[c.cgroup] = replace(now, badness=c.new)
            else:
                out[c.cgroup] = replace(now, delay_ms=c.new)
    return out


def test_pod_labels_only_when_sane() -> None:
    from memcgctl.logic.kube import pod_label_ok

    assert pod_label_ok("kube-system/coredns-5dd5756b68-2zrhr")
    for bad in ("a/b/c", "noslash", "ns/\x1b[31mred", "ns/" + "x" * 400, "ns/ünï"):
        assert not pod_label_ok(bad)


# -- containers, by annotation ----------------------------------------------------

CID = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "name,cid",
    [
        (f"cri-containerd-{CID}.scope", CID),
        (f"docker-{CID}.scope", CID),
        (f"crio-{CID}.scope", CID),
        (CID, CID),
        (f"crio-{CID}", CID),
        ("cri-containerd-xyz.scope", None),
        ("init.scope", None),
        (f"{CID}.slice", None),
    ],
)
def test_container_dirs(name: str, cid: str | None) -> None:
    from memcgctl.logic.kube import parse_container_dir

    assert parse_container_dir(name) == cid


def test_container_badness_by_annotation() -> None:
    item = {
        "metadata": {
            "uid": "aaaaaaaa-0001",
            "name": "web",
            "namespace": "ns",
            "annotations": {"memcgctl.io/badness.sidecar": "20", "memcgctl.io/badness.app": "x"},
        },
        "status": {
            "qosClass": "Burstable",
            "containerStatuses": [
                {"name": "app", "containerID": f"containerd://{CID}"},
                {"name": "sidecar", "containerID": "containerd://" + "f" * 64},
                {"name": "waiting"},  # no id yet
            ],
        },
    }
    pods, _ = parse_pod_list({"items": [item]})
    (pod,) = pods
    assert pod.containers == {"app": CID, "sidecar": "f" * 64}
    s = pod_settings(pod)
    assert s.containers == {"sidecar": 20} and len(s.problems) == 1
    (bad,) = s.problems
    assert problem_text(bad).endswith(f"={bad.raw!r}: not an integer 0-1000; ignored")
    base = f"/kubepods/burstable/pod{pod.uid}"
    pc = _cg(base)
    sidecar, app, sandbox = pc.path.child("f" * 64), pc.path.child(CID), pc.path.child("e" * 64)
    pc = PodCgroup(
        pc.path, pc.uid, pc.qos, pc.driver, pc.tier,
        (("f" * 64, sidecar), (CID, app), ("e" * 64, sandbox)),
    )  # fmt: skip
    current = {app: Current(7, None), sandbox: Current(None, None)}
    got = {
        (c.cgroup, c.new) for c in reconcile([pod], [pc], current).changes if c.key == BADNESS_KEY
    }
    assert (sidecar, 20) in got and (app, None) in got  # set; a stale value removed
    assert not any(cg == sandbox for cg, _ in got)


def test_the_reason_for_each_change_is_worded_in_render() -> None:
    from memcgctl.logic.kube import ChangeWhy, WhyKind
    from memcgctl.render.kubewords import why_text

    words = [
        why_text(ChangeWhy(WhyKind.POD, "ns/a")),
        why_text(ChangeWhy(WhyKind.POD_BADNESS, "ns/a", "annotation")),
        why_text(ChangeWhy(WhyKind.CONTAINER, "ns/a", "sidecar")),
        why_text(ChangeWhy(WhyKind.TIER, "ns/a")),
    ]
    assert words == [
        "ns/a",
        "ns/a (annotation)",
        "ns/a container sidecar",
        "QoS tier: lowest pod ns/a",
    ]
