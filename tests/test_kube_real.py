"""``memcgctl kube`` on every real pod list under ``shared/data/kubelet-pods`` (lists
from real clusters, Kubernetes 1.5-1.35, read at run time, never copied here), served by
a fake kubelet on 127.0.0.1 over a kubelet-shaped cgroup tree built from each list, for
both cgroup drivers: every pod cgroup gets the documented mapping's badness for the
pod's priority and QoS, and the agent warns about nothing (these are shapes Kubernetes
really serves).

The priority and QoS expected for each pod are read here from the raw document, apart
from the agent's parser: ``spec.priority``; without it, the value of the built-in
PriorityClass the pod names (static control-plane pods carry only the name), else 0;
``status.qosClass``, or for the pods that lack it the class written below by reading
their containers' resources.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.logic.kube import default_badness, parse_pod_list, pod_settings
from tests.fakehost import FakeHost
from tests.kubeserver import fake_kubelet
from tests.kubetree import pod_dir
from tests.realdata import DATA

TOKEN = "t0ken-real"
BADNESS = "trusted.memcgctl.badness"
LISTS = sorted(p.name for p in (DATA / "kubelet-pods").glob("*") if p.is_file()) or [
    "(shared/data/kubelet-pods missing)"
]

# pods without status.qosClass: their class from their containers' resources (read by
# hand: requests == limits for cpu and memory in every container is Guaranteed; limits
# alone default the requests to them; nothing at all is BestEffort)
QOS_BY_HAND: dict[str, dict[str, str]] = {
    "nri-kubernetes_kubelet_pods_payload.json": {
        # two containers, each requests == limits for cpu and memory
        "kube-state-metrics-57f4659995-6n2qq": "Guaranteed",
        "sh-7c95664875-4btqh": "BestEffort",  # resources: {}
    },
    "otel-kubeletstatsreceiver_pods.json": {
        # limits cpu 100m, memory 1G, no requests: defaulted to the limits
        "kube-scheduler-minikube": "Guaranteed",
        # no containers in the trimmed list: the tree puts them in besteffort, and the
        # agent takes the QoS from the tier the kubelet put the pod in
        "go-hello-world-5456b4b8cd-99vxc": "BestEffort",
        "kube-apiserver-minikube": "BestEffort",
        "coredns-66bff467f8-szddj": "BestEffort",
        "coredns-66bff467f8-58qvv": "BestEffort",
        "kube-controller-manager-minikube": "BestEffort",
        "kube-proxy-v48tf": "BestEffort",
        "storage-provisioner": "BestEffort",
        "etcd-minikube": "BestEffort",
    },
    "fluent-bit_options_use-kubelet-enabled.meta": {"use-kubelet-enabled": "BestEffort"},
    "fluent-bit_default_kairosdb-914055854-b63vq.meta": {},  # says BestEffort itself
}
BUILTIN = {"system-node-critical": 2_000_001_000, "system-cluster-critical": 2_000_000_000}


def load(name: str) -> Any:
    path = DATA / "kubelet-pods" / name
    if not path.is_file():
        pytest.skip(f"real third-party data not found at {path}")
    text = path.read_text()
    try:
        return json.loads(text)
    except ValueError:
        yaml = pytest.importorskip("yaml", reason="the API server's YAML list needs PyYAML")
        return yaml.safe_load(text)


def items(doc: Any) -> list[dict[str, Any]]:
    return list(doc.get("items", [doc]))  # a single Pod object is a list of one


def expected(name: str, item: dict[str, Any]) -> tuple[str, int]:
    """(the uid its cgroup is named after, the mapping's badness)."""
    meta, spec, status = item["metadata"], item.get("spec") or {}, item.get("status") or {}
    uid = (meta.get("annotations") or {}).get("kubernetes.io/config.mirror") or meta["uid"]
    priority = spec.get("priority")
    if priority is None:
        priority = BUILTIN.get(spec.get("priorityClassName", ""), 0)
    qos = status.get("qosClass") or QOS_BY_HAND[name][meta["name"]]
    return uid, default_badness(priority, qos)


def qos_of(name: str, item: dict[str, Any]) -> str:
    return (item.get("status") or {}).get("qosClass") or QOS_BY_HAND[name][item["metadata"]["name"]]


def xattr(path: Path) -> int | None:
    try:
        return int(os.getxattr(path, BADNESS))
    except OSError:
        return None


@pytest.mark.skipif(os.geteuid() != 0, reason="trusted.* xattrs need root")
@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
@pytest.mark.parametrize("name", LISTS)
def test_every_pod_of_a_real_list_gets_its_badness(
    fake_v1: FakeHost, tmp_path: Path, name: str, driver: str
) -> None:
    doc = load(name)
    token = tmp_path / "token"
    token.write_text(TOKEN)
    where: dict[str, tuple[Path, int, str]] = {}
    for item in items(doc):
        uid, badness = expected(name, item)
        qos = qos_of(name, item)
        rel = pod_dir(driver, qos, uid.lower())
        fake_v1.cgroup(rel)
        where[item["metadata"]["name"]] = (fake_v1.path(rel), badness, qos)
    assert where, name
    with fake_kubelet([doc], TOKEN) as k:
        r = CliRunner().invoke(
            cli,
            [
                "--cgroup-root",
                str(fake_v1.cgroot),
                "kube",
                "--once",
                "--namespace",
                "trusted",
                "--kubelet-url",
                k.url + "/pods",
                "--token-file",
                str(token),
            ],
            env=fake_v1.cli_env(),
        )
    assert r.exit_code == 0, (name, r.output)
    assert r.stderr == "", (name, r.stderr)  # real shapes: no warning
    got = {pod: xattr(path) for pod, (path, _, _) in where.items()}
    assert got == {pod: badness for pod, (_, badness, _) in where.items()}, name
    # the QoS tiers carry the lowest badness of the pods they hold
    for tier in ("Burstable", "BestEffort"):
        held = [b for _, b, q in where.values() if q == tier]
        if held:
            rel = pod_dir(driver, tier, "0" * 8).rsplit("/", 1)[0]
            assert xattr(fake_v1.path(rel)) == min(held), (name, tier)


def test_static_control_plane_pods_are_critical_not_user_band() -> None:
    """1.16 and 1.22 static pods name system-node/cluster-critical without a number:
    etcd and the API server land in the critical bands, above every user pod."""
    for name, cls_band in (
        ("nri-kubernetes_1_16_kubelet_pods.json", 961),  # system-cluster-critical, Burstable
        ("nri-kubernetes_1_22_kubelet_pods.json", 981),  # system-node-critical, Burstable
    ):
        pods, problems = parse_pod_list(load(name))
        assert problems == []
        etcd = next(p for p in pods if p.name.startswith("etcd-"))
        api = next(p for p in pods if p.name.startswith("kube-apiserver-"))
        user = [p for p in pods if not p.priority_class]

        assert pod_settings(api).badness == cls_band, name
        assert pod_settings(etcd).badness >= 960, name
        assert all(pod_settings(etcd).badness > pod_settings(u).badness for u in user), name


def test_qos_computed_as_kubernetes_does() -> None:
    from memcgctl.logic.kubeqos import compute_qos, parse_quantity

    assert parse_quantity("100m") == parse_quantity("0.1")
    assert parse_quantity("1Gi") == 1 << 30 and parse_quantity("1e3") == 1000
    assert parse_quantity("12x") is None and parse_quantity(True) is None

    def c(**res: dict[str, str]) -> dict[str, Any]:
        return {"containers": [{"resources": res}]}

    assert compute_qos(c()) == "BestEffort"
    assert compute_qos(c(limits={"cpu": "1", "memory": "1Gi"})) == "Guaranteed"
    assert compute_qos(c(limits={"memory": "1Gi"})) == "Burstable"  # no cpu limit
    assert compute_qos(c(requests={"cpu": "0"})) == "BestEffort"  # zero counts as none
    two = {
        "containers": [
            {"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}},
            {"resources": {"requests": {"cpu": "1"}}},
        ]
    }
    assert compute_qos(two) == "Burstable"
    assert compute_qos({"volumes": []}) is None  # a trimmed spec: unknown
