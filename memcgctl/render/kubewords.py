"""The words of ``memcgctl kube``: why a pod cgroup's setting changes, and what a
malformed annotation made the agent do instead (logic/kube.py returns both as data)."""

from __future__ import annotations

from memcgctl.logic.kube import AnnotationProblem, ChangeWhy, Fallback, WhyKind


def why_text(why: ChangeWhy) -> str:
    if why.kind is WhyKind.POD_BADNESS:
        return f"{why.pod} ({why.detail})"
    if why.kind is WhyKind.CONTAINER:
        return f"{why.pod} container {why.detail}"
    if why.kind is WhyKind.TIER:
        return f"QoS tier: lowest pod {why.pod}"
    return why.pod


def problem_text(p: AnnotationProblem) -> str:
    if p.fallback is Fallback.PRIORITY:
        return f"{p.pod}: {p.error}; using {p.badness} from its priority"
    if p.fallback is Fallback.NO_DELAY:
        return f"{p.pod}: {p.error}; no delay"
    return f"{p.pod}: {p.key}={p.raw!r}: not an integer 0-1000; ignored"
