"""contrib/kubernetes: the kustomize layout, validated offline against the Kubernetes
schemas (kubernetes-validate bundles them), and the least-privilege promises checked
one by one."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import click
import pytest

from memcgctl.cli import cli

yaml = pytest.importorskip("yaml", reason="PyYAML comes with kubernetes-validate (test extra)")

KDIR = Path(__file__).parent.parent / "contrib" / "kubernetes"
VERSIONS = ["1.28.0", "1.33.0"]


def kustomization() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((KDIR / "kustomization.yaml").read_text())
    return doc


def resources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        out += [d for d in yaml.safe_load_all((KDIR / name).read_text()) if d]
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in resources() if d["kind"] == kind]


def test_kustomization_lists_every_manifest() -> None:
    k = kustomization()
    assert k["kind"] == "Kustomization" and k["namespace"] == "memcgctl"
    listed = set(k["resources"])
    present = {p.name for p in KDIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert (KDIR.parent.parent / "tools" / "build-image").exists()


def test_the_image_is_the_package_version() -> None:
    """The DaemonSet names the tag tools/build-image gives (memcgctl:<version>), and the
    kustomization keeps that tag when it sets the registry."""
    from memcgctl import __version__

    for name, c in _containers().items():
        assert c["image"] == f"memcgctl:{__version__}", name
    (image,) = kustomization()["images"]
    assert image["name"] == "memcgctl" and image["newTag"] == __version__


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_validate_against_the_schemas(version: str) -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install -e '.[test]'")
    for doc in resources():
        kv.validate(doc, version, strict=True)
    broken = dict(by_kind("DaemonSet")[0], spec={"selektor": {}})
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, version, strict=True)


def _containers() -> dict[str, dict[str, Any]]:
    spec = by_kind("DaemonSet")[0]["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def test_least_privilege() -> None:
    ds = by_kind("DaemonSet")[0]
    pod = ds["spec"]["template"]["spec"]
    assert not pod.get("hostNetwork") and pod["hostPID"] is True  # the daemon's, see the file
    caps = {}
    for name, c in _containers().items():
        sc = c["securityContext"]
        assert not sc.get("privileged") and sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
        caps[name] = set(sc["capabilities"]["add"])
        mounts = {m["mountPath"] for m in c["volumeMounts"]}
        assert mounts == {"/host/sys/fs/cgroup", "/run/memcgctl"}
    assert caps == {
        "agent": {"SYS_ADMIN"},
        # SYS_PTRACE: nsenter -t 1 (found running the image: tests/image)
        "daemon": {"KILL", "SYS_ADMIN", "SYS_RESOURCE", "IPC_LOCK", "SYS_PTRACE"},
    }
    (role,) = by_kind("ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    (binding,) = by_kind("ClusterRoleBinding")
    (sa,) = by_kind("ServiceAccount")
    assert binding["subjects"][0]["name"] == sa["metadata"]["name"] == pod["serviceAccountName"]
    assert ds["spec"]["template"]["metadata"]["annotations"]["memcgctl.io/badness"] == "1000"


def _parse(argv: list[str]) -> None:
    """Parse a memcgctl command line as the CLI would (unknown options raise)."""
    from memcgctl.cli import LAZY_COMMANDS

    i = next(i for i, word in enumerate(argv) if word in LAZY_COMMANDS)
    ctx = cli.make_context("memcgctl", argv[:i])
    cmd = cli.get_command(ctx, argv[i])
    assert cmd is not None
    cmd.make_context(argv[i], argv[i + 1 :], parent=ctx)


def test_container_command_lines_parse() -> None:
    agent = _containers()["agent"]
    _parse(agent["args"])
    daemon = _containers()["daemon"]
    script = daemon["args"][-1]
    for part in script.split(";"):
        words = shlex.split(part)
        words = words[1:] if words[0] == "exec" else words
        assert words[0] == "memcgctl"
        _parse(words[1:])
    with pytest.raises(click.UsageError):
        _parse(["kube", "--no-such-option"])
