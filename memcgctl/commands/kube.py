"""``memcgctl kube``: the Kubernetes node agent.

Keeps the badness (and OOM delay) of every pod cgroup on this node in step with the
pod's priority: fetch the pods (the kubelet's ``/pods`` by default, or the API server),
find the pod cgroups, write what differs; again every ``--interval``.  When the source
is unreachable it keeps the last pod list it had, says so once on stderr, and carries
on (new cgroups of pods it knows still get their badness).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType

import click

from memcgctl.actions.kubesync import apply_change, discover_pod_cgroups, read_current
from memcgctl.commands.common import Seconds, dry_run_option, pass_env
from memcgctl.commands.examples import epilog
from memcgctl.env import Env
from memcgctl.inputs.kubeapi import (
    DEFAULT_KUBELET_URL,
    SERVICE_ACCOUNT_DIR,
    PodSource,
    SourceUnavailable,
    api_server_pods_url,
)
from memcgctl.logic.kube import BADNESS_KEY, POD_KEY, Change, Pod, reconcile
from memcgctl.render.kubewords import problem_text, why_text
from memcgctl.render.logprio import Priority, prefixed
from memcgctl.render.output import say
from memcgctl.render.safetext import printable
from memcgctl.state.store import NAMESPACES, default_namespace
from memcgctl.vocab.errors import UsageProblem
from memcgctl.vocab.units import format_duration_ms


def log(priority: Priority, message: str) -> None:
    """A stderr line with its syslog priority prefix (journald reads it), as the
    daemon's."""
    click.echo(printable(prefixed(priority, f"kube: {message}")), err=True)


def _fmt(change: Change, value: int | str | None) -> str:
    if value is None:
        return "off" if change.key not in (BADNESS_KEY, POD_KEY) else "unset"
    if isinstance(value, str) or change.key == BADNESS_KEY:
        return str(value)
    return format_duration_ms(value)


_WHAT = {BADNESS_KEY: "badness", POD_KEY: "pod label"}


def describe(change: Change, dry_run: bool) -> str:
    verb = "would set" if dry_run else "set"
    what = _WHAT.get(change.key, "OOM delay")
    line = f"{change.cgroup}: {verb} {what} {_fmt(change, change.new)}"
    line += f" (was {_fmt(change, change.old)})"
    return line if change.key == POD_KEY else f"{line} for {why_text(change.why)}"


class Agent:
    """One reconcile per :meth:`tick`; the loop around it is thin."""

    def __init__(self, env: Env, source: PodSource, namespace: str, dry_run: bool) -> None:
        self.env = env
        self.source = source
        self.namespace = namespace
        self.dry_run = dry_run
        self.pods: list[Pod] | None = None  # the last list the source gave
        self.unreachable = False
        self._warned: set[str] = set()

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            log(Priority.WARNING, message)

    def refresh(self, once: bool = False) -> None:
        """Fetch the pods; on failure keep the last list and say so once (``once``:
        raise the failure instead, to be the command's one error line)."""
        try:
            pods, problems = self.source.fetch()
        except SourceUnavailable as exc:
            if once:
                raise
            if self.pods is None and not self.unreachable:
                log(Priority.ERR, f"{exc.message}; no pod list yet, nothing to reconcile")
            elif not self.unreachable:
                log(
                    Priority.WARNING,
                    f"{exc.message}; keeping the last known state ({len(self.pods or [])} pods)",
                )
            self.unreachable = True
            return
        if self.unreachable:
            log(Priority.NOTICE, f"{self.source.describe()}: reachable again ({len(pods)} pods)")
        self.unreachable = False
        for p in problems:
            self._warn_once(f"{self.source.describe()}: {p}")
        self.pods = pods

    def reconcile(self) -> list[Change]:
        """Bring the pod cgroups in step with the last known pods; the changes made."""
        if self.pods is None:
            return []
        fs = self.env.fs
        cgroups = discover_pod_cgroups(fs)
        paths = {c.path for c in cgroups} | {c.tier for c in cgroups if c.tier is not None}
        paths |= {path for c in cgroups for _, path in c.containers}
        plan = reconcile(self.pods, cgroups, read_current(fs, sorted(paths), self.namespace))
        for problem in plan.problems:
            self._warn_once(problem_text(problem))
        done: list[Change] = []
        for change in plan.changes:
            if self.dry_run or apply_change(fs, change, self.namespace):
                done.append(change)
                say(describe(change, self.dry_run))
        return done

    def tick(self) -> list[Change]:
        self.refresh()
        return self.reconcile()


def _source(
    kubelet_url: str,
    api_server: str | None,
    node_name: str | None,
    token_file: Path | None,
    ca_file: Path | None,
    insecure_kubelet: bool,
    timeout: float,
) -> PodSource:
    sa_token, sa_ca = SERVICE_ACCOUNT_DIR / "token", SERVICE_ACCOUNT_DIR / "ca.crt"
    token = token_file if token_file is not None else (sa_token if sa_token.exists() else None)
    ca = ca_file if ca_file is not None else (sa_ca if sa_ca.exists() else None)
    if api_server is not None:
        if not node_name:
            raise UsageProblem("--api-server needs --node-name (or NODE_NAME)")
        if insecure_kubelet:
            raise UsageProblem("--insecure-kubelet is for the kubelet, not --api-server")
        return PodSource(api_server_pods_url(api_server, node_name), token, ca, False, timeout)
    return PodSource(kubelet_url, token, ca, insecure_kubelet, timeout)


@click.command("kube", epilog=epilog("kube"))
@click.option(
    "--kubelet-url",
    envvar="MEMCGCTL_KUBELET_URL",
    default=DEFAULT_KUBELET_URL,
    show_default=True,
    help="The kubelet's pod list (the default source). [env: MEMCGCTL_KUBELET_URL]",
)
@click.option(
    "--api-server",
    envvar="MEMCGCTL_API_SERVER",
    default=None,
    metavar="URL",
    help="Ask the API server instead (e.g. https://kubernetes.default.svc), for the "
    "pods with spec.nodeName = --node-name. [env: MEMCGCTL_API_SERVER]",
)
@click.option(
    "--node-name", envvar="NODE_NAME", default=None, help="This node's name. [env: NODE_NAME]"
)
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Bearer token, read for every request (default: the service account's).",
)
@click.option(
    "--ca-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="CA bundle for the server's certificate (default: the service account's).",
)
@click.option(
    "--insecure-kubelet",
    is_flag=True,
    help="Do not verify the kubelet's serving certificate (often self-signed).",
)
@click.option(
    "--interval",
    type=Seconds(),
    default="10",
    show_default=True,
    help="Seconds between reconciles (pods added or removed are seen within one).",
)
@click.option(
    "--timeout",
    type=Seconds(),
    default="5",
    show_default=True,
    help="Seconds for each request, all of it (connect, headers, body).",
)
@click.option("--once", is_flag=True, help="Reconcile once and exit (1 if the source failed).")
@click.option(
    "--namespace",
    type=click.Choice(["auto", *NAMESPACES]),
    default="auto",
    show_default=True,
    help="xattr namespace to write: trusted (root) or user; auto picks by uid.",
)
@dry_run_option
@pass_env
def kube(
    env: Env,
    kubelet_url: str,
    api_server: str | None,
    node_name: str | None,
    token_file: Path | None,
    ca_file: Path | None,
    insecure_kubelet: bool,
    interval: float,
    timeout: float,
    once: bool,
    namespace: str,
    dry_run: bool,
) -> None:
    """Kubernetes node agent: keep every pod cgroup's badness in step with its pod.

    Default mapping: system-node-critical 980-982, system-cluster-critical 960-962,
    other priorities 100-949 by value (Guaranteed above Burstable), BestEffort 10-99;
    the annotations memcgctl.io/badness (0-1000; 1000 = never) and
    memcgctl.io/oom-delay (500ms, 2s, off) override it per pod.  The kubelet's QoS-tier
    cgroups get the lowest badness of the pods they hold.  Both kubelet cgroup
    drivers (systemd, cgroupfs) are found by walking the hierarchy.
    """
    source = _source(
        kubelet_url, api_server, node_name, token_file, ca_file, insecure_kubelet, timeout
    )
    if interval <= 0 and not once:
        raise UsageProblem("--interval must be more than 0")
    ns = default_namespace() if namespace == "auto" else namespace
    agent = Agent(env, source, ns, dry_run)
    env.fs  # noqa: B018 - resolve the hierarchy now: a bad --cgroup-root fails at once
    if once:
        agent.refresh(once=True)
        agent.reconcile()
        return
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(Priority.INFO, f"watching {source.describe()} every {interval:g}s ({ns}.* xattrs)")
    while not stop.is_set():
        agent.tick()
        stop.wait(interval)
    log(Priority.INFO, "stopped")
