"""Kubelet-shaped cgroup trees for ``memcgctl kube`` tests (fixture trees, the real v1
hierarchy and the v2 guest alike): where each kubelet cgroup driver puts a pod."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from memcgctl.logic.kube import QOS_GUARANTEED, Pod, parse_pod_list

DATA = Path(__file__).parent / "data" / "kube"
CONTAINER_ID = "4f1c0ffee0ddba11" * 4


def load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def pods_of(doc: Any) -> list[Pod]:
    pods, problems = parse_pod_list(doc)
    assert problems == []
    return pods


def pod_dir(driver: str, qos: str, uid: str) -> str:
    """The pod cgroup, relative to the kubelet's parent (no leading /)."""
    tier = qos.lower()
    if driver == "systemd":
        u = uid.replace("-", "_")
        if qos == QOS_GUARANTEED:
            return f"kubepods.slice/kubepods-pod{u}.slice"
        return f"kubepods.slice/kubepods-{tier}.slice/kubepods-{tier}-pod{u}.slice"
    if qos == QOS_GUARANTEED:
        return f"kubepods/pod{uid}"
    return f"kubepods/{tier}/pod{uid}"


def container_dir(driver: str, pod: str) -> str:
    return (
        f"{pod}/cri-containerd-{CONTAINER_ID}.scope"
        if driver == "systemd"
        else f"{pod}/{CONTAINER_ID}"
    )


def build(pods: list[Pod], driver: str, make: Callable[[str], object]) -> dict[str, str]:
    """Create each pod's cgroup and one container cgroup in it with ``make(rel)``;
    return {namespace/name: pod cgroup (relative)}."""
    out: dict[str, str] = {}
    for pod in pods:
        d = pod_dir(driver, pod.qos, pod.uid)
        make(d)
        make(container_dir(driver, d))
        out[pod.label] = d
    return out
