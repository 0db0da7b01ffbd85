"""``memcgctl kube --once`` on this machine's real memory hierarchy: kubelet-shaped
trees of both drivers under the test parent, the pod list from a fake kubelet on
127.0.0.1, the xattrs read back from the kernel, and predict-victim choosing the
lowest-priority pod's process over a bigger one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memcgctl.logic.kube import pod_settings
from tests.kubeserver import fake_kubelet
from tests.kubetree import build, container_dir, load, pods_of
from tests.realkernel import TestCgroups

TOKEN = "kernel-test-token"
NODE = "kubelet-node-constructed.json"


def memcgctl(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "memcgctl", "--cgroup-root", str(root), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.kernel
@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_kube_once_on_the_real_hierarchy(cgroups: TestCgroups, tmp_path: Path, driver: str) -> None:
    doc = load(NODE)
    pods = pods_of(doc)
    where = build(pods, driver, lambda rel: cgroups.make(rel, 128 << 20))
    root = cgroups.path(cgroups.parent)
    by_label = {p.label: p for p in pods}
    lowest = "ci/ci-runner-6f8b9c7d4-qw8rt"  # BestEffort, priority 0
    big = "shop/api-7c9f8d6b5-x2kqz"  # priority 100000, Guaranteed
    cgroups.hog(f"{cgroups.parent}/{container_dir(driver, where[big])}", mib=48)
    small = cgroups.sleeper(f"{cgroups.parent}/{container_dir(driver, where[lowest])}")
    token = tmp_path / "token"
    token.write_text(TOKEN)
    with fake_kubelet([doc], TOKEN) as k:
        r = memcgctl(
            root,
            "kube",
            "--once",
            "--namespace",
            "trusted",
            "--kubelet-url",
            k.url + "/pods",
            "--token-file",
            str(token),
        )
    assert r.returncode == 0, r.stderr
    for label, rel in where.items():
        want = pod_settings(by_label[label])
        d = root / rel
        assert int(os.getxattr(d, "trusted.memcgctl.badness")) == want.badness, label
        assert os.getxattr(d, "trusted.memcgctl.pod") == label.encode()
        if want.delay_ms is not None:
            assert int(os.getxattr(d, "trusted.memcgctl.oom_delay_ms")) == want.delay_ms
        container = root / container_dir(driver, rel)
        if label == big:  # memcgctl.io/badness.api: "50"
            assert os.getxattr(container, "trusted.memcgctl.badness") == b"50"
        else:
            with pytest.raises(OSError):
                os.getxattr(container, "trusted.memcgctl.badness")
    with pytest.raises(OSError):
        os.getxattr(root, "trusted.memcgctl.badness")
    r = memcgctl(root, "predict-victim", "--json")
    assert r.returncode == 0, r.stderr
    victim = json.loads(r.stdout)["victim"]
    assert victim["pid"] == small.pid, victim
    assert victim["pod"] == lowest, victim  # the container's cgroup is the pod's
    # --explain names the pods next to their cgroups
    r = memcgctl(root, "predict-victim", "--explain", "--plain")
    assert r.returncode == 0, r.stderr
    chosen = [ln for ln in r.stdout.splitlines() if "(pod " in ln and "chosen" in ln]
    assert len(chosen) == 1 and f"(pod {lowest})" in chosen[0], r.stdout
