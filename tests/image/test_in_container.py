"""The image tools/build-image makes, run as contrib/kubernetes/daemonset.yaml runs it,
inside the cgroup v2 guest (tests/test_image.py boots it and runs this module there with
``MEMCGCTL_IN_VM=1``; on the host the directory is not collected: see tests/conftest.py).

podman's storage is a fresh tmpfs directory under the guest's ``/run``; the image comes
from the OCI archive tools/build-image saved (``.cache/image/memcgctl-<version>.oci.tar``,
in the repository the guest shares).  Each container gets the pod's namespaces and the
container's securityContext from the manifest: host PID namespace (``hostPID``), the
host's ``/sys/fs/cgroup`` at ``/host/sys/fs/cgroup``, every capability dropped but the
listed ones, a read-only root file system, no privilege escalation.  ``--network=host``
only so the container reaches the fake kubelet on the guest's 127.0.0.1 (the DaemonSet
talks to the API server instead).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import memcgctl
from memcgctl.logic.kube import pod_settings
from tests.kubeserver import fake_kubelet
from tests.kubetree import build, container_dir, load, pods_of
from tests.realkernel import TestCgroups

REPO = Path(__file__).resolve().parent.parent.parent
ARCHIVE = REPO / ".cache" / "image" / f"memcgctl-{memcgctl.__version__}.oci.tar"
TOKEN = "image-token"
LOWEST = "ci/ci-runner-6f8b9c7d4-qw8rt"  # BestEffort, priority 0: the victim
MIDDLE = "batch/etl-28391040-k7p2m"  # Burstable, priority -10
HOST_CG = "/host/sys/fs/cgroup"
CONF = """\
[containers]
default_ulimits = []
log_driver = "k8s-file"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "crun"
"""


def skip_reason() -> str | None:
    if not os.environ.get("MEMCGCTL_IN_VM"):
        return "runs inside the cgroup v2 guest (tests/test_image.py boots it)"
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("podman") is None:
        return "no podman (apt-get install podman)"
    if not ARCHIVE.exists():
        return f"no image archive {ARCHIVE}: run tools/build-image"
    return None


@pytest.fixture(autouse=True)
def _in_guest_with_image() -> None:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(reason)


def daemonset() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml")
    text = (REPO / "contrib" / "kubernetes" / "daemonset.yaml").read_text()
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


def containers() -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in daemonset()["spec"]["template"]["spec"]["containers"]}


@dataclass
class Podman:
    base: list[str]
    env: dict[str, str]

    def run(
        self, container: dict[str, Any], argv: list[str], extra: list[str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``podman run`` the manifest's container (its image, securityContext and
        hostPID) with ``extra`` options and ``argv`` after the image.  No
        ``seccompProfile`` in the manifest is Kubernetes' ``Unconfined`` (unless the
        kubelet runs with ``--seccomp-default``), so no seccomp filter here either."""
        sc = container["securityContext"]
        opts = ["--rm", "--pid=host", "--network=host", f"--user={sc['runAsUser']}"]
        opts += ["-v", f"/sys/fs/cgroup:{HOST_CG}"]
        if sc.get("privileged"):
            opts.append("--privileged")
        else:
            opts += [f"--cap-drop={c}" for c in sc["capabilities"]["drop"]]
            opts += [f"--cap-add={c}" for c in sc["capabilities"].get("add", [])]
        if sc.get("readOnlyRootFilesystem"):
            opts.append("--read-only")
        if sc.get("allowPrivilegeEscalation") is False:
            opts.append("--security-opt=no-new-privileges")
        if "seccompProfile" not in sc:
            opts.append("--security-opt=seccomp=unconfined")
        for e in container.get("env", []):
            if "value" in e:
                opts.append(f"--env={e['name']}={e['value']}")
        return subprocess.run(
            [*self.base, "run", *opts, *(extra or []), container["image"], *argv],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    top = Path("/run") / f"memcgctl-image-{os.getpid()}"  # tmpfs in the guest
    top.mkdir()
    conf = top / "containers.conf"
    conf.write_text(CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    base = ["podman", "--root", str(top / "storage"), "--runroot", str(top / "run")]
    base += ["--storage-driver", "overlay"]
    r = subprocess.run(
        [*base, "load", "-q", "-i", str(ARCHIVE)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    try:
        yield Podman(base, env)
    finally:
        subprocess.run([*base, "system", "reset", "--force"], env=env, capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


def test_the_daemonset_names_this_version() -> None:
    for c in containers().values():
        assert c["image"] == f"memcgctl:{memcgctl.__version__}"


@pytest.mark.kernel
def test_agent_and_prediction_inside_the_image(
    podman: Podman, cgroups: TestCgroups, tmp_path: Path
) -> None:
    """The agent container (CAP_SYS_ADMIN only, read-only root) marks every pod cgroup
    of a kubelet-shaped tree from the fake kubelet's list; then ``predict-victim
    --json``, privileged in the host PID namespace, names the lowest-priority pod's
    process by its host pid."""
    from tests.v2.test_kube_v2 import loopback_up

    loopback_up()
    doc = load("kubelet-node-constructed.json")
    pods = pods_of(doc)
    where = build(pods, "systemd", lambda rel: cgroups.make(rel))
    os.setxattr(cgroups.path(cgroups.parent), "trusted.memcgctl.badness", b"100")

    def container(label: str) -> str:
        return f"{cgroups.parent}/{container_dir('systemd', where[label])}"

    small = cgroups.hog(container(LOWEST), mib=20)
    cgroups.hog(container(MIDDLE), mib=30)
    (tmp_path / "token").write_text(TOKEN)
    (tmp_path / "state").mkdir()
    root = f"--cgroup-root={HOST_CG}{cgroups.parent}"
    mounts = ["-v", f"{tmp_path / 'token'}:/token:ro", "-v", f"{tmp_path / 'state'}:/run/memcgctl"]
    agent = containers()["agent"]
    with fake_kubelet([doc], TOKEN) as k:
        r = podman.run(
            agent,
            [root, "kube", "--once", "--kubelet-url", f"{k.url}/pods", "--token-file", "/token"],
            mounts,
        )
        assert r.returncode == 0, r.stderr
        assert k.served_count() == 1
    by_label = {p.label: p for p in pods}
    for label, rel in where.items():
        pod_cg = cgroups.path(f"{cgroups.parent}/{rel}")
        assert int(os.getxattr(pod_cg, "trusted.memcgctl.badness")) == (
            pod_settings(by_label[label]).badness
        ), label
        assert os.getxattr(pod_cg, "trusted.memcgctl.pod") == label.encode()

    privileged = {**containers()["daemon"], "securityContext": {"runAsUser": 0, "privileged": True}}
    r = podman.run(privileged, [root, "predict-victim", "--json"], ["--cgroupns=host", *mounts])
    assert r.returncode == 0, r.stderr
    victim = json.loads(r.stdout)["victim"]
    assert victim["pid"] == small.pid and victim["pod"] == LOWEST, victim


@pytest.mark.kernel
def test_daemon_command_line_of_the_manifest(podman: Podman, tmp_path: Path) -> None:
    """The daemon container's own command (``nsenter --target=1 --cgroup``) with its
    capabilities: in the host's cgroup namespace its cgroup path is the host's (the
    container's own libpod cgroup, not ``/``), and the first half of its script
    (``daemon --release``) runs."""
    daemon = containers()["daemon"]
    release = daemon["args"][-1].split(";")[0].strip()
    assert release.startswith("memcgctl ") and release.endswith(" daemon --release")
    (tmp_path / "state").mkdir()
    r = podman.run(
        daemon,
        [f"cat /proc/self/cgroup; {release}"],  # `command` is the ENTRYPOINT, `args` the CMD
        [
            "--entrypoint",
            json.dumps(daemon["command"]),
            "-v",
            f"{tmp_path / 'state'}:/run/memcgctl",
        ],
    )
    assert r.returncode == 0, r.stderr
    own = r.stdout.splitlines()[0]
    assert own.startswith("0::/") and own != "0::/", r.stdout
