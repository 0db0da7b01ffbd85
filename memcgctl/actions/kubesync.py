"""``memcgctl kube``'s work on the cgroup hierarchy: find the kubelet's pod cgroups,
read what they carry, write the changes :func:`memcgctl.logic.kube.reconcile` computed.

Discovery walks; nothing is configured.  The kubelet's root (``kubepods`` for the
cgroupfs driver, ``kubepods.slice`` for systemd) is looked for near the top of the
hierarchy (it sits at the root, or one or two levels down under a node's or a
container runtime's own cgroup), then only its QoS tiers are entered.  Containers'
cgroups below the pods are never visited.
"""

from __future__ import annotations

from collections.abc import Iterable

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.logic.kube import (
    BADNESS_KEY,
    POD_KEY,
    Change,
    Current,
    PodCgroup,
    parse_container_dir,
    parse_pod_cgroup,
)
from memcgctl.state.store import BADNESS, OOM_DELAY, POD, read_namespace, read_pod, write_setting
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import NoSuchCgroup, Vanished
from memcgctl.vocab.structs import replace

KUBEPODS_ROOTS = ("kubepods", "kubepods.slice")
SEARCH_DEPTH = 3  # how deep below the hierarchy root a kubelet root may sit
_XATTR_KEY = {BADNESS_KEY: BADNESS}


def _children(fs: CgroupFs, cg: CgroupPath) -> list[CgroupPath]:
    try:
        return fs.children(cg)
    except Vanished:
        return []


def find_kubepods_roots(fs: CgroupFs, depth: int = SEARCH_DEPTH) -> list[CgroupPath]:
    roots: list[CgroupPath] = []
    level = [ROOT]
    for _ in range(depth):
        below: list[CgroupPath] = []
        for cg in level:
            for kid in _children(fs, cg):
                (roots if kid.name in KUBEPODS_ROOTS else below).append(kid)
        level = below
    return sorted(roots)


def _with_containers(fs: CgroupFs, pc: PodCgroup) -> PodCgroup:
    containers = []
    for kid in _children(fs, pc.path):
        cid = parse_container_dir(kid.name)
        if cid is not None:
            containers.append((cid, kid))
    return replace(pc, containers=tuple(containers))


def discover_pod_cgroups(fs: CgroupFs) -> list[PodCgroup]:
    """Every pod cgroup of either driver under every kubelet root found, with the
    container cgroups directly below it."""
    found: list[PodCgroup] = []
    for root in find_kubepods_roots(fs):
        for kid in _children(fs, root):
            pc = parse_pod_cgroup(kid)
            if pc is not None:
                found.append(_with_containers(fs, pc))
                continue
            for grandkid in _children(fs, kid):  # a QoS tier
                pc = parse_pod_cgroup(grandkid)
                if pc is not None:
                    found.append(_with_containers(fs, pc))
    return found


def read_current(
    fs: CgroupFs, cgroups: Iterable[CgroupPath], namespace: str
) -> dict[CgroupPath, Current]:
    """What each cgroup carries in ``namespace`` (cgroups gone meanwhile are left out)."""
    out: dict[CgroupPath, Current] = {}
    for cg in cgroups:
        try:
            out[cg] = Current(
                read_namespace(fs, cg, BADNESS, namespace),
                read_namespace(fs, cg, OOM_DELAY, namespace),
                read_pod(fs, cg, namespace),
            )
        except Vanished:
            continue
    return out


def apply_change(fs: CgroupFs, change: Change, namespace: str) -> bool:
    """Write one change; False when the cgroup vanished meanwhile (the pod went)."""
    try:
        if change.key == POD_KEY:
            name = f"{namespace}.{POD}"
            if change.new is None:
                fs.remove_xattr(change.cgroup, name)
            else:
                fs.set_xattr(change.cgroup, name, str(change.new).encode("ascii"))
        else:
            value = change.new
            assert value is None or isinstance(value, int)
            write_setting(
                fs, change.cgroup, _XATTR_KEY.get(change.key, OOM_DELAY), value, namespace
            )
    except (NoSuchCgroup, Vanished):
        return False
    return True
