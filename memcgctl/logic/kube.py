"""Kubernetes pods → badness: the pure part of ``memcgctl kube`` (no I/O).

* :func:`parse_pod_list` reads a PodList (the kubelet's ``/pods`` and the API server's
  ``/api/v1/pods`` have the same shape) into :class:`Pod` values.
* :func:`default_badness` is the documented default mapping from ``spec.priority`` and
  ``status.qosClass`` to badness; :func:`pod_settings` applies the per-pod annotations
  ``memcgctl.io/badness`` and ``memcgctl.io/oom-delay`` on top of it.
* :func:`parse_pod_cgroup` recognises a pod cgroup written by either kubelet cgroup
  driver from its path; :func:`reconcile` computes the xattr changes that bring the pod
  cgroups (and the kubelet's QoS-tier cgroups that hold them) in step with the pods.

The mapping (lower badness dies first; 1000 = never, only by annotation)::

    system-node-critical     (priority >= 2000001000)   980 + q     (q: BestEffort 0,
    system-cluster-critical  (priority >= 2000000000)   960 + q      Burstable 1,
    Burstable / Guaranteed   (user priority p)          100 .. 949    Guaranteed 2)
    BestEffort               (user priority p)           10 .. 99

For user priorities (-2^31 .. 10^9) the position inside a band is
``sign(p) * log2(1 + |p|)`` scaled linearly onto the band: it keeps the order of every
priority value while giving the values people actually use (0, 1000, 10^5, 10^6, 10^9,
negative "preemptible" classes) room between them.  Inside the Burstable/Guaranteed
band each priority step has two slots, Burstable then Guaranteed (QoS breaks ties).
BestEffort pods of user priority sit below every Burstable and Guaranteed pod, as the
kubelet's own ``oom_score_adj`` (1000 for BestEffort) and eviction order have it.  The
mapping is monotonic in each argument: a higher priority never gets a lower badness at
the same QoS, and a better QoS never gets a lower badness at the same priority.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping

from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.constants import BADNESS_NEVER
from memcgctl.vocab.errors import Malformed, UsageProblem
from memcgctl.vocab.podname import valid_pod_label
from memcgctl.vocab.structs import dataclass, field, replace

ANNOTATION_BADNESS = "memcgctl.io/badness"
ANNOTATION_DELAY = "memcgctl.io/oom-delay"
# memcgctl.io/badness.<container name>: the badness of one container's cgroup
ANNOTATION_CONTAINER_PREFIX = ANNOTATION_BADNESS + "."
# A static pod's mirror in the API server has its own uid; the kubelet (and the pod's
# cgroup) know the static pod by the hash this annotation holds.
ANNOTATION_MIRROR = "kubernetes.io/config.mirror"

SYSTEM_NODE_CRITICAL = 2_000_001_000
SYSTEM_CLUSTER_CRITICAL = 2_000_000_000
# The built-in PriorityClasses: the Priority admission plugin resolves these names to
# these values; a static pod (not admitted) may carry only the name.
BUILTIN_PRIORITY_CLASSES = {
    "system-node-critical": SYSTEM_NODE_CRITICAL,
    "system-cluster-critical": SYSTEM_CLUSTER_CRITICAL,
}
USER_PRIORITY_MIN = -(2**31)
USER_PRIORITY_MAX = 1_000_000_000  # the API server refuses higher user PriorityClasses

QOS_GUARANTEED, QOS_BURSTABLE, QOS_BESTEFFORT = "Guaranteed", "Burstable", "BestEffort"
QOS_RANK = {QOS_BESTEFFORT: 0, QOS_BURSTABLE: 1, QOS_GUARANTEED: 2}

BAND_NODE_CRITICAL = 980
BAND_CLUSTER_CRITICAL = 960
BAND_USER_LO, BAND_USER_LEVELS = 100, 425  # 100 + 2 * 424 + 1 = 949
BAND_BESTEFFORT_LO, BAND_BESTEFFORT_LEVELS = 10, 90  # 10 .. 99


class PodListError(Malformed):
    """The document is not a pod list at all (a single bad item is only skipped)."""


@dataclass(frozen=True)
class Pod:
    uid: str  # the uid the pod's cgroup is named after
    namespace: str
    name: str
    priority: int | None
    priority_class: str
    qos: str
    annotations: Mapping[str, str] = field(default_factory=dict, compare=False)
    containers: Mapping[str, str] = field(default_factory=dict, compare=False)  # name -> id

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def effective_priority(self) -> int | None:
        """``spec.priority``, or the value of a built-in PriorityClass it names without
        one (a static control-plane pod: ``priorityClassName: system-node-critical``
        but no number, since no admission plugin resolved it)."""
        if self.priority is None:
            return BUILTIN_PRIORITY_CLASSES.get(self.priority_class)
        return self.priority


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def parse_pod(item: object) -> Pod:
    """One PodList item; ValueError naming what is wrong."""
    if not isinstance(item, dict):
        raise ValueError("not an object")
    meta, spec, status = (item.get(k) for k in ("metadata", "spec", "status"))
    if not isinstance(meta, dict):
        raise ValueError("no metadata")
    spec = spec if isinstance(spec, dict) else {}
    status = status if isinstance(status, dict) else {}
    raw_ann = meta.get("annotations")
    annotations = (
        {k: v for k, v in raw_ann.items() if isinstance(k, str) and isinstance(v, str)}
        if isinstance(raw_ann, dict)
        else {}
    )
    uid = annotations.get(ANNOTATION_MIRROR) or _str(meta.get("uid"))
    if not _UID.fullmatch(uid):
        raise ValueError(f"uid {uid!r} is not a pod uid")
    priority = spec.get("priority")
    if priority is not None and (type(priority) is not int or abs(priority) > 2**31):
        raise ValueError(f"spec.priority {priority!r} is not a 32-bit integer")
    containers: dict[str, str] = {}
    for key in ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses"):
        statuses = status.get(key)
        for st in statuses if isinstance(statuses, list) else []:
            if not isinstance(st, dict):
                continue
            name, cid = _str(st.get("name")), _str(st.get("containerID"))
            m = _CONTAINER_ID.fullmatch(cid.partition("://")[2])
            if name and m is not None:
                containers[name] = m.group(0).lower()
    qos = _str(status.get("qosClass"))
    if qos not in QOS_RANK:
        # no qosClass (older kubelets, trimmed lists): from the containers' resources as
        # Kubernetes computes it; without containers, "" (the cgroup's tier tells)
        from memcgctl.logic.kubeqos import compute_qos

        qos = compute_qos(spec) or ""
    return Pod(
        uid=uid.lower(),
        namespace=_str(meta.get("namespace")),
        name=_str(meta.get("name")),
        priority=priority,
        priority_class=_str(spec.get("priorityClassName")),
        qos=qos,
        annotations=annotations,
        containers=containers,
    )


def parse_pod_list(doc: object) -> tuple[list[Pod], list[str]]:
    """(pods, one problem line per skipped item).  PodListError if ``doc`` is no list.

    Taken as lists: a ``PodList`` (the kubelet, the API server), the ``List`` that
    ``kubectl get pods -o yaml|json`` prints, a trimmed list with no ``kind`` at all,
    and ``kind: Pod`` with an ``items`` array (as some tools' fixtures of ``/pods``
    have it); a single ``Pod`` object is a list of one."""
    if (
        isinstance(doc, dict)
        and doc.get("kind") == "Pod"
        and not isinstance(doc.get("items"), list)
    ):
        doc = {"kind": "PodList", "items": [doc]}
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise PodListError("not a PodList (no items array)")
    kind = doc.get("kind")
    if kind not in (None, "PodList", "List", "Pod"):
        raise PodListError(f"not a PodList (kind {kind!r})")
    pods: list[Pod] = []
    problems: list[str] = []
    for i, item in enumerate(doc["items"]):
        try:
            pods.append(parse_pod(item))
        except ValueError as exc:
            problems.append(f"item {i}: skipped ({exc})")
    return pods, problems


# -- the mapping ------------------------------------------------------------------


def _slog(p: int) -> float:
    return math.copysign(math.log2(1 + abs(p)), p)


_SLOG_MIN, _SLOG_MAX = _slog(USER_PRIORITY_MIN), _slog(USER_PRIORITY_MAX)


def _position(p: int, levels: int) -> int:
    """0 .. levels-1, monotonic in the user priority p."""
    p = min(max(p, USER_PRIORITY_MIN), USER_PRIORITY_MAX)
    frac = (_slog(p) - _SLOG_MIN) / (_SLOG_MAX - _SLOG_MIN)
    return min(levels - 1, max(0, math.floor(frac * levels)))


def default_badness(priority: int | None, qos: str) -> int:
    """The default badness of a pod (see the module doc).  A missing priority is 0 (no
    Priority admission plugin); an unknown QoS counts as Burstable."""
    p = 0 if priority is None else priority
    rank = QOS_RANK.get(qos, QOS_RANK[QOS_BURSTABLE])
    if p >= SYSTEM_NODE_CRITICAL:
        return BAND_NODE_CRITICAL + rank
    if p >= SYSTEM_CLUSTER_CRITICAL:
        return BAND_CLUSTER_CRITICAL + rank
    if rank == 0:
        return BAND_BESTEFFORT_LO + _position(p, BAND_BESTEFFORT_LEVELS)
    return BAND_USER_LO + 2 * _position(p, BAND_USER_LEVELS) + (rank - 1)


_BADNESS_TEXT = re.compile(r"[0-9]{1,4}", re.ASCII)


def parse_badness_annotation(text: str) -> int:
    """ASCII digits only, 0-1000 (no sign, no spaces, no "５"); ValueError otherwise."""
    if not _BADNESS_TEXT.fullmatch(text) or int(text) > BADNESS_NEVER:
        raise ValueError(f"{ANNOTATION_BADNESS}={text!r}: not an integer 0-1000")
    return int(text)


def parse_delay_annotation(text: str) -> int | None:
    """A duration as ``set-delay`` takes it (500ms, 2s, 0, off → None)."""
    from memcgctl.vocab.units import parse_delay

    try:
        return parse_delay(text)
    except UsageProblem as exc:
        raise ValueError(f"{ANNOTATION_DELAY}={text!r}: {exc.message}") from None


class Fallback(enum.Enum):
    """What applies instead of a malformed annotation."""

    PRIORITY = "priority"  # the badness from the pod's priority and QoS
    NO_DELAY = "no delay"
    IGNORED = "ignored"  # a container's badness: the pod's applies


@dataclass(frozen=True)
class AnnotationProblem:
    """A malformed annotation, reported and ignored (render/kubewords.py words it)."""

    pod: str  # namespace/name
    key: str
    raw: str
    error: str  # the parser's one line
    fallback: Fallback
    badness: int | None = None  # PRIORITY: the badness used instead


@dataclass(frozen=True)
class PodSettings:
    badness: int
    badness_source: str  # "annotation" | "priority"
    delay_ms: int | None  # None: no delay (the xattr is removed)
    problems: tuple[AnnotationProblem, ...] = ()
    containers: Mapping[str, int] = field(default_factory=dict)  # container name -> badness


def pod_settings(pod: Pod) -> PodSettings:
    """What the pod's cgroup should carry.  A malformed annotation is reported and
    ignored (the default applies), never fatal."""
    problems: list[AnnotationProblem] = []
    badness, source = default_badness(pod.effective_priority, pod.qos), "priority"
    raw = pod.annotations.get(ANNOTATION_BADNESS)
    if raw is not None:
        try:
            badness, source = parse_badness_annotation(raw), "annotation"
        except ValueError as exc:
            problems.append(
                AnnotationProblem(
                    pod.label, ANNOTATION_BADNESS, raw, str(exc), Fallback.PRIORITY, badness
                )
            )
    delay: int | None = None
    raw = pod.annotations.get(ANNOTATION_DELAY)
    if raw is not None:
        try:
            delay = parse_delay_annotation(raw)
        except ValueError as exc:
            problems.append(
                AnnotationProblem(pod.label, ANNOTATION_DELAY, raw, str(exc), Fallback.NO_DELAY)
            )
    containers: dict[str, int] = {}
    for key, raw in sorted(pod.annotations.items()):
        if key.startswith(ANNOTATION_CONTAINER_PREFIX):
            name = key[len(ANNOTATION_CONTAINER_PREFIX) :]
            try:
                containers[name] = parse_badness_annotation(raw)
            except ValueError as exc:
                problems.append(AnnotationProblem(pod.label, key, raw, str(exc), Fallback.IGNORED))
    return PodSettings(badness, source, delay, tuple(problems), containers)


# -- pod cgroups of both kubelet drivers --------------------------------------------

_UID = re.compile(r"[0-9a-fA-F][0-9a-fA-F-]{7,63}", re.ASCII)
# systemd driver: kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice
# (Guaranteed: kubepods.slice/kubepods-pod<uid_>.slice)
_SYSTEMD_POD = re.compile(
    r"kubepods(?:-(burstable|besteffort))?-pod([0-9a-fA-F][0-9a-fA-F_]{7,63})\.slice", re.ASCII
)
# cgroupfs driver: kubepods/burstable/pod<uid>, kubepods/pod<uid>
_CGROUPFS_POD = re.compile(r"pod([0-9a-fA-F][0-9a-fA-F-]{7,63})", re.ASCII)
_TIER = {"burstable": QOS_BURSTABLE, "besteffort": QOS_BESTEFFORT}
# A container's id in status.containerStatuses ("containerd://<id>") and its cgroup below
# the pod's: <runtime>-<id>.scope (systemd driver), <id> or crio-<id> (cgroupfs)
_CONTAINER_ID = re.compile(r"[0-9a-fA-F]{12,128}", re.ASCII)
_CONTAINER_DIR = re.compile(
    r"(?:(?:cri-containerd|docker|crio|cri-o)-)?([0-9a-f]{12,128})(?:\.scope)?", re.ASCII
)


def parse_container_dir(name: str) -> str | None:
    """The container id a cgroup directory below a pod cgroup is named after."""
    m = _CONTAINER_DIR.fullmatch(name)
    return m.group(1) if m is not None else None


@dataclass(frozen=True)
class PodCgroup:
    path: CgroupPath  # in the hierarchy, e.g. /kubepods.slice/kubepods-pod<uid_>.slice
    uid: str  # lower case, with dashes
    qos: str  # the QoS tier the kubelet put it in
    driver: str  # "systemd" | "cgroupfs"
    tier: (
        CgroupPath | None
    )  # the QoS-tier cgroup holding it (None: Guaranteed, directly in kubepods)
    containers: tuple[tuple[str, CgroupPath], ...] = ()  # (container id, its cgroup)


def parse_pod_cgroup(path: CgroupPath) -> PodCgroup | None:
    """The pod a cgroup path belongs to, when it is a kubelet pod cgroup of either
    driver, exactly where the kubelet puts them; None for anything else."""
    parts = path.parts
    head = path.parent
    if len(parts) < 2 or head is None:
        return None
    name, parent = parts[-1], parts[-2]
    grand = parts[-3] if len(parts) >= 3 else None
    m = _SYSTEMD_POD.fullmatch(name)
    if m is not None:
        tier_name, uid = m.group(1), m.group(2).replace("_", "-").lower()
        if tier_name is None and parent == "kubepods.slice":
            return PodCgroup(path, uid, QOS_GUARANTEED, "systemd", None)
        if (
            tier_name is not None
            and parent == f"kubepods-{tier_name}.slice"
            and grand == "kubepods.slice"
        ):
            return PodCgroup(path, uid, _TIER[tier_name], "systemd", head)
        return None
    m = _CGROUPFS_POD.fullmatch(name)
    if m is not None and "_" not in name:
        uid = m.group(1).lower()
        if parent == "kubepods":
            return PodCgroup(path, uid, QOS_GUARANTEED, "cgroupfs", None)
        if parent in _TIER and grand == "kubepods":
            return PodCgroup(path, uid, _TIER[parent], "cgroupfs", head)
    return None


# -- reconcile ----------------------------------------------------------------------

BADNESS_KEY, DELAY_KEY, POD_KEY = "badness", "oom_delay_ms", "pod"


def pod_label_ok(label: str) -> bool:
    """A label the readers will accept (:func:`memcgctl.vocab.podname.valid_pod_label`):
    Kubernetes' own namespace and pod-name shapes, so never anything else."""
    return valid_pod_label(label)


@dataclass(frozen=True)
class Current:
    """The values a cgroup carries now, in the namespace the agent writes."""

    badness: int | None
    delay_ms: int | None
    pod: str | None = None


class WhyKind(enum.Enum):
    POD = "pod"  # the pod's own setting
    POD_BADNESS = "pod badness"  # detail: where the badness came from
    CONTAINER = "container"  # detail: the container's name (or short id)
    TIER = "tier"  # the QoS tier follows its lowest pod


@dataclass(frozen=True)
class ChangeWhy:
    """Why a change is planned, as data (render/kubewords.py words it)."""

    kind: WhyKind
    pod: str  # namespace/name
    detail: str = ""


@dataclass(frozen=True)
class Change:
    cgroup: CgroupPath
    key: str  # BADNESS_KEY | DELAY_KEY | POD_KEY
    old: int | str | None
    new: int | str | None  # None: remove
    why: ChangeWhy


@dataclass
class Plan:
    changes: list[Change]
    matched: dict[str, Pod]  # pod cgroup path -> pod
    problems: list[AnnotationProblem]


def reconcile(
    pods: Iterable[Pod], cgroups: Iterable[PodCgroup], current: Mapping[CgroupPath, Current]
) -> Plan:
    """The changes that make every pod cgroup carry its pod's settings, every container
    cgroup the badness its ``memcgctl.io/badness.<name>`` annotation asks for (none
    without one), and every QoS tier cgroup the lowest badness among the pods it holds (so that the hierarchical
    walk descends into the tier that holds the node's lowest-priority pod).

    A cgroup whose uid is not in ``pods`` (a pod not yet listed, or gone) is left
    alone, and so is a tier none of whose pods are listed.  Nothing else is touched:
    only the cgroups given in ``cgroups`` (and their tiers) appear in the plan."""
    by_uid = {p.uid: p for p in pods}
    changes: list[Change] = []
    matched: dict[str, Pod] = {}
    problems: list[AnnotationProblem] = []
    tier_min: dict[CgroupPath, tuple[int, str]] = {}
    for pc in sorted(cgroups, key=lambda c: c.path):
        pod = by_uid.get(pc.uid)
        if pod is None:
            continue
        if pod.qos not in QOS_RANK:  # the list does not say: the kubelet's tier does
            pod = replace(pod, qos=pc.qos)
        matched[pc.path] = pod
        want = pod_settings(pod)
        problems.extend(want.problems)
        now = current.get(pc.path, Current(None, None))
        why = ChangeWhy(WhyKind.POD_BADNESS, pod.label, want.badness_source)
        own = ChangeWhy(WhyKind.POD, pod.label)
        if now.badness != want.badness:
            changes.append(Change(pc.path, BADNESS_KEY, now.badness, want.badness, why))
        if now.delay_ms != want.delay_ms:
            changes.append(Change(pc.path, DELAY_KEY, now.delay_ms, want.delay_ms, own))
        if now.pod != pod.label and pod_label_ok(pod.label):
            changes.append(Change(pc.path, POD_KEY, now.pod, pod.label, own))
        by_id = {cid: name for name, cid in pod.containers.items()}
        for cid, path in pc.containers:
            name = by_id.get(cid)
            wanted = want.containers.get(name) if name is not None else None
            held = current.get(path, Current(None, None)).badness
            if held != wanted:
                kid = ChangeWhy(WhyKind.CONTAINER, pod.label, name or cid[:12])
                changes.append(Change(path, BADNESS_KEY, held, wanted, kid))
        if pc.tier is not None:
            best = tier_min.get(pc.tier)
            if best is None or want.badness < best[0]:
                tier_min[pc.tier] = (want.badness, pod.label)
    for tier, (badness, label) in sorted(tier_min.items()):
        now = current.get(tier, Current(None, None))
        if now.badness != badness:
            lowest = ChangeWhy(WhyKind.TIER, label)
            changes.append(Change(tier, BADNESS_KEY, now.badness, badness, lowest))
    return Plan(changes, matched, problems)
