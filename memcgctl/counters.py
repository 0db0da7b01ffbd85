"""Kill counters (SPEC §4): the kernel's counters and kills by cause.  Pure functions.

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

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from memcgctl.events import in_subtree
from memcgctl.kmsg import cause_of

KERNEL_KEYS = ("oom", "oom_kill", "oom_group_kill")


def pick_kernel_counters(values: Mapping[str, int]) -> dict[str, int]:
    return {k: values[k] for k in KERNEL_KEYS if k in values}


def subtree_sum(cg: str, local: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """v1 hierarchical counters: the sum of the local counters of cg and its descendants."""
    out: dict[str, int] = {}
    for other, values in local.items():
        if in_subtree(other, cg):
            for k, v in values.items():
                out[k] = out.get(k, 0) + v
    return out


def by_cause(cg: str, kills: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts = {"system": 0, "memcg": 0, "user": 0}
    for ev in kills:
        where = ev.get("cgroup")
        if not in_subtree(where if isinstance(where, str) else None, cg):
            continue
        kind = ev.get("kind")
        if kind == "user_kill":
            counts["user"] += 1
        elif kind == "oom_kill":
            cause = ev.get("cause") or cause_of(dict(ev))
            if cause in ("system", "memcg"):
                counts[cause] += 1
    return counts


def cgroup_counters(
    cg: str,
    local: Mapping[str, int] | None,
    hierarchical: Mapping[str, int] | None,
    kills: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    causes = by_cause(cg, kills)
    kernel_total = (hierarchical or {}).get("oom_kill")
    complete = kernel_total is None or causes["system"] + causes["memcg"] >= kernel_total
    return {
        "cgroup": cg,
        "local": dict(local) if local is not None else None,
        "hierarchical": dict(hierarchical) if hierarchical is not None else None,
        "by_cause": causes,
        "complete": complete,
    }


# -- Prometheus text exposition ----------------------------------------------------------


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus(doc: Mapping[str, Any]) -> str:
    """The counters document in the Prometheus text format (node_exporter textfile)."""
    lines = [
        "# HELP memcgctl_host_oom_kills_total OOM-killer victims on the host (/proc/vmstat oom_kill).",
        "# TYPE memcgctl_host_oom_kills_total counter",
        f"memcgctl_host_oom_kills_total {doc['system'].get('oom_kill', 0)}",
        "# HELP memcgctl_oom_kills_total OOM kills per memory cgroup: kernel counters"
        " (kind=local|hierarchical) and kills by cause (kind=system|memcg|user).",
        "# TYPE memcgctl_oom_kills_total counter",
    ]
    extra: dict[str, list[str]] = {"oom": [], "oom_group_kill": []}
    complete = []
    for c in doc["cgroups"]:
        cg = _label(c["cgroup"])
        for scope in ("local", "hierarchical"):
            values = c.get(scope)
            if not values:
                continue
            if "oom_kill" in values:
                lines.append(
                    f'memcgctl_oom_kills_total{{cgroup="{cg}",kind="{scope}"}} {values["oom_kill"]}'
                )
            for key in extra:
                if key in values:
                    extra[key].append(f'{{cgroup="{cg}",scope="{scope}"}} {values[key]}')
        for cause in ("system", "memcg", "user"):
            lines.append(
                f'memcgctl_oom_kills_total{{cgroup="{cg}",kind="{cause}"}} {c["by_cause"][cause]}'
            )
        complete.append(f'memcgctl_oom_kill_log_complete{{cgroup="{cg}"}} {int(c["complete"])}')
    if extra["oom"]:
        lines += [
            "# HELP memcgctl_oom_events_total Times the memcg hit its limit and was about to OOM.",
            "# TYPE memcgctl_oom_events_total counter",
            *(f"memcgctl_oom_events_total{s}" for s in extra["oom"]),
        ]
    if extra["oom_group_kill"]:
        lines += [
            "# HELP memcgctl_oom_group_kills_total Group OOM kills (memory.oom.group).",
            "# TYPE memcgctl_oom_group_kills_total counter",
            *(f"memcgctl_oom_group_kills_total{s}" for s in extra["oom_group_kill"]),
        ]
    lines += [
        "# HELP memcgctl_oom_kill_log_complete 1 if the kernel log and journal still hold"
        " every kill the kernel counted in the subtree.",
        "# TYPE memcgctl_oom_kill_log_complete gauge",
        *complete,
    ]
    return "\n".join(lines) + "\n"
