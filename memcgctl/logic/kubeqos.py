"""A pod's QoS class computed from its spec, as Kubernetes does when ``status.qosClass``
is absent (pure; ``pkg/apis/core/v1/helper/qos``, ``ComputePodQOS``).

Only ``cpu`` and ``memory`` count.  Requests left out where a limit is set are the limit
(the API server's defaulting does that before any pod is served; a trimmed list may lack
it).  Every container and init container adds its non-zero requests and limits:

* nothing requested, nothing limited: ``BestEffort``;
* every container limits both cpu and memory, and the summed requests equal the summed
  limits for every resource: ``Guaranteed``;
* anything else: ``Burstable``.

Pod-level ``spec.resources`` (1.32+), when set, are the pod's requests and limits.
A spec without containers says nothing: :func:`compute_qos` returns None.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

QOS_RESOURCES = ("cpu", "memory")
_SUFFIX: dict[str, int | Decimal] = {
    "": 1,
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_QUANTITY = re.compile(
    r"([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?:([eE][+-]?[0-9]+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?)",
    re.ASCII,
)


def parse_quantity(value: object) -> Decimal | None:
    """A Kubernetes resource quantity (``100m``, ``1.5Gi``, ``1e3``, a number); None if
    it is none."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value))
    if not isinstance(value, str):
        return None
    m = _QUANTITY.fullmatch(value.strip())
    if m is None:
        return None
    try:
        number = Decimal(m.group(1))
        if m.group(2):
            return number * Decimal(10) ** int(m.group(2)[1:])
        return number * Decimal(_SUFFIX[m.group(3) or ""])
    except (InvalidOperation, ValueError):
        return None


def _resources(block: object) -> tuple[dict[str, Decimal], dict[str, Decimal]]:
    """(requests, limits) of a ``resources`` block: cpu and memory, non-zero, requests
    defaulted from limits."""
    block = block if isinstance(block, dict) else {}
    out: list[dict[str, Decimal]] = []
    for key in ("requests", "limits"):
        raw = block.get(key)
        values: dict[str, Decimal] = {}
        for name in QOS_RESOURCES:
            q = parse_quantity(raw.get(name)) if isinstance(raw, dict) else None
            if q is not None and q > 0:
                values[name] = q
        out.append(values)
    requests, limits = out
    raw_requests = block.get("requests")
    for name, q in limits.items():
        if not (isinstance(raw_requests, dict) and name in raw_requests):
            requests.setdefault(name, q)
    return requests, limits


def compute_qos(spec: object) -> str | None:
    """The QoS class of a pod spec (see the module doc); None without containers."""
    if not isinstance(spec, dict):
        return None
    blocks: list[object] = []
    pod_level = spec.get("resources")
    if isinstance(pod_level, dict) and (pod_level.get("requests") or pod_level.get("limits")):
        blocks = [pod_level]
    else:
        for key in ("containers", "initContainers"):
            items = spec.get(key)
            for c in items if isinstance(items, list) else []:
                if isinstance(c, dict):
                    blocks.append(c.get("resources"))
    if not blocks:
        return None
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for block in blocks:
        req, lim = _resources(block)
        for name, q in req.items():
            requests[name] = requests.get(name, Decimal(0)) + q
        for name, q in lim.items():
            limits[name] = limits.get(name, Decimal(0)) + q
        if not all(name in lim for name in QOS_RESOURCES):
            guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if (
        guaranteed
        and all(limits.get(n) == q for n, q in requests.items())
        and len(requests) == len(limits)
    ):
        return "Guaranteed"
    return "Burstable"
