"""The container image tools/build-image makes, run as the DaemonSet runs it, in the
cgroup v2 guest (this host's crun refuses its hybrid cgroup hierarchy and its root lacks
CAP_SYS_RESOURCE for podman's default ulimits).

One boot runs ``pytest tests/image`` there with ``MEMCGCTL_IN_VM=1`` and this test judges
that run from its JUnit XML: it passed, every test executed, none was skipped.  Skipped
(with the reason) when there is no image archive (``tools/build-image`` makes it;
``tools/test-image`` builds and runs this), no podman, or the guest cannot boot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from memcgctl import __version__
from tests.test_v2_guest import RUNNER, VM_FAILED, _why_no_qemu

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".cache" / "image"
ARCHIVE = OUT / f"memcgctl-{__version__}.oci.tar"
GUEST_TESTS = 3  # tests/image/test_in_container.py


def skip_reason() -> str | None:
    why = _why_no_qemu()
    if why is not None:
        return why
    if shutil.which("podman") is None:
        return "no podman on this host (the guest uses the host's): apt-get install podman"
    if not ARCHIVE.exists():
        return f"no image archive {ARCHIVE.relative_to(REPO)}: run tools/build-image (or tools/test-image)"
    return None


def test_the_image_runs_as_the_daemonset_runs_it() -> None:
    why = skip_reason()
    if why is not None:
        pytest.skip(why)
    junit = OUT / "junit.xml"
    junit.unlink(missing_ok=True)
    rel = junit.relative_to(REPO)
    env = {**os.environ, "MEMCGCTL_IN_VM": "1"}
    env.pop("PYTEST_ADDOPTS", None)
    p = subprocess.run(
        [
            str(RUNNER),
            sys.executable,
            "-m",
            "pytest",
            "tests/image",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rs",
            f"--junitxml={rel}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    log = (
        f"run-in-kernel exit {p.returncode}\n--- stdout ---\n{p.stdout}\n--- stderr ---\n{p.stderr}"
    )
    (OUT / "guest.log").write_text(log)
    assert p.returncode != VM_FAILED, "the VM itself failed (exit 125)\n" + log
    assert junit.exists(), log
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    bad = [
        f"{c.get('name')}: {child.tag} {child.get('message')}"
        for c in cases
        for child in c
        if child.tag in ("skipped", "failure", "error")
    ]
    assert bad == [], "\n".join(bad) + "\n" + log
    assert len(cases) == GUEST_TESTS and p.returncode == 0, log
