"""Kill counters: the kernel's counters and kills by cause.  Pure functions.

* ``local`` / ``hierarchical``: the kernel's own counters (v1: ``memory.oom_control``
  oom_kill is local only, hierarchical is the subtree sum; v2: ``memory.events.local`` /
  ``memory.events``: oom, oom_kill, oom_group_kill where present).
* ``by_cause``: kills of tasks in the subtree, from the kernel log and the journal —
  ``system`` (a host-wide OOM: CONSTRAINT_NONE / global_oom, cpuset, mempolicy),
  ``memcg`` (a cgroup limit: CONSTRAINT_MEMCG), ``user`` (kills memcgctl did while handling an OOM; not ``manual_kill``).
* ``complete``: whether the log and journal still hold every kill the kernel counted in
  the subtree (system + memcg >= the kernel's hierarchical oom_kill).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from memcgctl.vocab.cgpath import CgroupPath, in_subtree

KERNEL_KEYS = ("oom", "oom_kill", "oom_group_kill")


def pick_kernel_counters(values: Mapping[str, int]) -> dict[str, int]:
    return {k: values[k] for k in KERNEL_KEYS if k in values}


def subtree_sum(cg: CgroupPath, local: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """v1 hierarchical counters: the sum of the local counters of cg and its descendants."""
    out: dict[str, int] = {}
    for other, values in local.items():
        if in_subtree(other, cg):
            for k, v in values.items():
                out[k] = out.get(k, 0) + v
    return out


def subtree_sums(
    order: Sequence[CgroupPath], local: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """v1 hierarchical counters of every cgroup in ``order`` (a pre-order walk: parents
    before children) at once, in one pass from the leaves up: O(cgroups), where
    :func:`subtree_sum` per cgroup is O(cgroups²) over a whole tree."""
    sums: dict[str, dict[str, int]] = {}
    for cg in reversed(order):
        if cg not in local:
            continue
        mine = sums.setdefault(cg, {})
        for k, v in local[cg].items():
            mine[k] = mine.get(k, 0) + v
        parent = cg.parent
        if parent is not None and parent in local:
            up = sums.setdefault(parent, {})
            for k, v in mine.items():
                up[k] = up.get(k, 0) + v
    return sums


def containers(text: str) -> list[str]:
    """Every cgroup path that contains ``text`` (a record's cgroup field, any text) by
    :meth:`CgroupPath.contains`, but the root: ``text`` itself and each prefix that ends
    just before a ``/``.  Lets a count per subtree be summed in O(kills × depth)."""
    out = [text[:i] for i in range(1, len(text)) if text[i] == "/"]
    out.append(text)
    return out


def by_cause_many(
    cgs: Iterable[CgroupPath],
    per_cgroup: Mapping[str, Mapping[str, int]],
    extra_root: Mapping[str, int],
) -> dict[CgroupPath, dict[str, int]]:
    """Kills by cause in the subtree of each of ``cgs``, from kills by cause per cgroup
    (``per_cgroup``; the root also gets ``extra_root``), each kill added to every
    cgroup above it once: the same sums as one subtree scan per cgroup, without the
    cgroups × kills product."""
    wanted = {str(cg) for cg in cgs}
    acc: dict[str, dict[str, int]] = {}
    root = dict(extra_root)
    for other, causes in per_cgroup.items():
        for cause, n in causes.items():
            root[cause] = root.get(cause, 0) + n
        for c in containers(other):
            if c in wanted and c != "/":
                mine = acc.setdefault(c, {})
                for cause, n in causes.items():
                    mine[cause] = mine.get(cause, 0) + n
    out: dict[CgroupPath, dict[str, int]] = {}
    for cg in cgs:
        base = root if cg.is_root else acc.get(cg, {})
        out[cg] = {cause: base.get(cause, 0) for cause in ("system", "memcg", "user")}
    return out


def _cause_of(ev: Mapping[str, Any]) -> str | None:
    # the kernel-log parser only for a kill that does not say its cause (counters
    # starts without it: tests/test_startup_imports.py)
    from memcgctl.logic.oomassembler import cause_of

    return cause_of(dict(ev))


def by_cause(cg: CgroupPath, kills: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = {"system": 0, "memcg": 0, "user": 0}
    for ev in kills:
        where = ev.get("cgroup")
        if not in_subtree(where if isinstance(where, str) else None, cg):
            continue
        kind = ev.get("kind")
        if kind == "user_kill":
            counts["user"] += 1
        elif kind == "oom_kill":
            cause = ev.get("cause") or _cause_of(ev)
            if cause in ("system", "memcg"):
                counts[cause] += 1
    return counts


def entry(
    cg: CgroupPath,
    local: Mapping[str, int] | None,
    hierarchical: Mapping[str, int] | None,
    causes: Mapping[str, int],
) -> dict[str, Any]:
    """Counters of one cgroup with by_cause given (from the running totals)."""
    kernel_total = (hierarchical or {}).get("oom_kill")
    complete = kernel_total is None or causes["system"] + causes["memcg"] >= kernel_total
    return {
        "cgroup": cg,
        "local": dict(local) if local is not None else None,
        "hierarchical": dict(hierarchical) if hierarchical is not None else None,
        "by_cause": dict(causes),
        "complete": complete,
    }


# -- Prometheus text exposition ----------------------------------------------------------


# compiled at first use (re's cache), not at import: counters --json never needs it
_RAW_BYTE = r"[\ud800-\udfff]|\\(?=x(?:[89a-fA-F][0-9a-fA-F]|5[cC]))"


def _raw_byte(m: re.Match[str]) -> str:
    c = m.group()
    if c == "\\":
        return "\\x5c"
    if "\udc80" <= c <= "\udcff":  # os.fsdecode's escape of a byte that is not UTF-8
        return f"\\x{ord(c) - 0xDC00:02x}"
    return "\ufffd"  # any other lone surrogate: no filesystem name makes one


def label_text(value: str) -> str:
    """A cgroup path as valid UTF-8 text, the same path for every name that is.

    Names come from the filesystem as surrogate-escaped ``str``: a byte that is not
    UTF-8 (a delegated user may name a cgroup ``x\\xffy``) becomes ``\\xNN``.  The
    mapping stays one-to-one, so two cgroups never share a series: a literal backslash
    that would read as such an escape (``\\x80``-``\\xff``, ``\\x5c``) is written ``\\x5c``.
    Every other name, systemd's ``\\x2d`` ones included, is unchanged."""
    return re.sub(_RAW_BYTE, _raw_byte, value)


def _label(value: str) -> str:
    """A label value escaped per the text exposition format (\\, \", \n), always
    valid UTF-8 (:func:`label_text`)."""
    value = label_text(value)
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


# (family, help) of the kernel's counters, per scope
_KERNEL_FAMILIES = {
    "oom_kill": (
        "memcgctl_kernel_oom_kills_total",
        "OOM-killer victims the kernel counted in the memory cgroup (scope=local: tasks"
        " of the cgroup itself; scope=hierarchical: of its subtree). Do not sum over scope"
        " or over nested cgroups.",
    ),
    "oom": (
        "memcgctl_kernel_oom_events_total",
        "Times the memory cgroup hit its limit and the OOM killer was about to run"
        " (v2 memory.events oom; scope as for memcgctl_kernel_oom_kills_total).",
    ),
    "oom_group_kill": (
        "memcgctl_kernel_oom_group_kills_total",
        "Group OOM kills (v2 memory.oom.group; scope as for memcgctl_kernel_oom_kills_total).",
    ),
}


def prometheus(doc: Mapping[str, Any]) -> str:
    """The counters document in the Prometheus text format (node_exporter textfile).

    Families that are never summed with each other: the host counter, the kernel's
    per-cgroup counters (label ``scope``), the kills by cause (label ``cause``: sum
    over it for all kills of a subtree), their start time (``_created``, a reset
    marker) and whether the log covered every kill (a gauge)."""
    lines = [
        "# HELP memcgctl_host_oom_kills_total OOM-killer victims on the host (/proc/vmstat oom_kill).",
        "# TYPE memcgctl_host_oom_kills_total counter",
        f"memcgctl_host_oom_kills_total {doc['system'].get('oom_kill', 0)}",
    ]
    kernel: dict[str, list[str]] = {key: [] for key in _KERNEL_FAMILIES}
    causes: list[str] = []
    created: list[str] = []
    complete: list[str] = []
    since = doc.get("counting_since")
    for c in doc["cgroups"]:
        cg = _label(c["cgroup"])
        for scope in ("local", "hierarchical"):
            values = c.get(scope) or {}
            for key in _KERNEL_FAMILIES:
                if key in values:
                    kernel[key].append(f'{{cgroup="{cg}",scope="{scope}"}} {values[key]}')
        for cause in ("system", "memcg", "user"):
            causes.append(f'{{cgroup="{cg}",cause="{cause}"}} {c["by_cause"][cause]}')
            if since is not None:
                created.append(f'{{cgroup="{cg}",cause="{cause}"}} {since:.3f}')
        complete.append(f'{{cgroup="{cg}"}} {int(c["complete"])}')
    for key, (name, help_text) in _KERNEL_FAMILIES.items():
        if kernel[key]:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
            lines += [f"{name}{s}" for s in kernel[key]]
    name = "memcgctl_oom_kills_total"
    lines += [
        f"# HELP {name} Kills of tasks in the memory cgroup's subtree by cause:"
        " system (host-wide OOM), memcg (a cgroup limit), user (memcgctl killed while"
        " handling an OOM). Running totals: they survive journal rotation; they restart"
        " only with a new epoch (see memcgctl_oom_kills_created).",
        f"# TYPE {name} counter",
        *(f"{name}{s}" for s in causes),
    ]
    if created:
        name = "memcgctl_oom_kills_created"
        lines += [
            f"# HELP {name} Unix time the running totals of memcgctl_oom_kills_total"
            " started counting (moves at a reboot or when the totals were lost).",
            f"# TYPE {name} gauge",
            *(f"{name}{s}" for s in created),
        ]
    name = "memcgctl_oom_kill_log_complete"
    lines += [
        f"# HELP {name} 1 if the kernel log and journal still hold every kill the kernel"
        " counted in the subtree.",
        f"# TYPE {name} gauge",
        *(f"{name}{s}" for s in complete),
    ]
    return "\n".join(lines) + "\n"
