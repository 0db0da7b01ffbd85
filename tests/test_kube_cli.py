"""``memcgctl kube`` against fixture trees and a fake kubelet on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.logic.kube import pod_settings
from tests.fakehost import FakeHost
from tests.kubeserver import fake_kubelet, slow_kubelet
from tests.kubetree import build, container_dir, load, pod_dir, pods_of
from tests.realkernel import wait_until

TOKEN = "t0ken-abc.def"
BADNESS = "trusted.memcgctl.badness"
DELAY = "trusted.memcgctl.oom_delay_ms"
NODE = "kubelet-node-constructed.json"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="trusted.* xattrs need root")


def xattr(path: Path, name: str = BADNESS) -> int | None:
    try:
        return int(os.getxattr(path, name))
    except OSError:
        return None


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    return f


def run(fake: FakeHost, url: str, token_file: Path, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli,
        [
            "--cgroup-root",
            str(fake.cgroot),
            "kube",
            "--once",
            "--namespace",
            "trusted",
            "--kubelet-url",
            url,
            "--token-file",
            str(token_file),
            *extra,
        ],
        env=fake.cli_env(),
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs"])
def test_once_sets_every_pod_and_tier(fake_v1: FakeHost, token_file: Path, driver: str) -> None:
    doc = load(NODE)
    pods = pods_of(doc)
    where = build(pods, driver, fake_v1.cgroup)
    fake_v1.cgroup("system.slice")
    stranger = pod_dir(driver, "Burstable", "deadbeef-0000-4000-8000-000000000000")
    fake_v1.cgroup(stranger)
    with fake_kubelet([doc], TOKEN) as k:
        code, out, err = run(fake_v1, k.url + "/pods", token_file)
    assert (code, err.count("\n")) == (0, 2), err  # the two bad annotations, once each
    assert "memcgctl.io/badness='５0'" in err and err.startswith("<4>kube: ")
    assert k.requests == [("/pods", f"Bearer {TOKEN}")]
    for pod in pods:
        d = fake_v1.path(where[pod.label])
        want = pod_settings(pod)
        assert xattr(d) == want.badness, pod.label
        assert xattr(d, DELAY) == want.delay_ms, pod.label
        container = xattr(fake_v1.path(container_dir(driver, where[pod.label])))
        # only the api pod's container asks for its own badness (memcgctl.io/badness.api)
        assert container == (50 if pod.name.startswith("api-") else None), pod.label
    tiers = {
        "burstable": min(pod_settings(p).badness for p in pods if p.qos == "Burstable"),
        "besteffort": min(pod_settings(p).badness for p in pods if p.qos == "BestEffort"),
    }
    for tier, lowest in tiers.items():
        t = f"kubepods.slice/kubepods-{tier}.slice" if driver == "systemd" else f"kubepods/{tier}"
        assert xattr(fake_v1.path(t)) == lowest
    for untouched in (
        "system.slice",
        stranger,
        where["ci/ci-runner-6f8b9c7d4-qw8rt"].split("/")[0],
    ):
        assert xattr(fake_v1.path(untouched)) is None
    assert xattr(fake_v1.cgroot) is None
    # BestEffort priority 0 is the node's lowest, the annotated postgres never dies
    assert "ci/ci-runner-6f8b9c7d4-qw8rt" in out and "badness 1000" in out
    # a second pass changes nothing
    with fake_kubelet([doc], TOKEN) as k:
        assert run(fake_v1, k.url + "/pods", token_file)[:2] == (0, "")


def test_dry_run_changes_nothing(fake_v1: FakeHost, token_file: Path) -> None:
    doc = load("apiserver-list-constructed.json")
    where = build(pods_of(doc), "systemd", fake_v1.cgroup)
    with fake_kubelet([doc], TOKEN) as k:
        code, out, _ = run(fake_v1, k.url + "/pods", token_file, "--dry-run")
    assert code == 0 and out.count("would set badness") == 2  # the pod and its tier
    assert all(xattr(fake_v1.path(d)) is None for d in where.values())


def test_wrong_token_is_one_line_exit_1(fake_v1: FakeHost, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text("nope")
    with fake_kubelet([load(NODE)], TOKEN) as k:
        code, out, err = run(fake_v1, k.url + "/pods", bad)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "HTTP 401" in err and "Traceback" not in err


def test_unreachable_once_fails(fake_v1: FakeHost, token_file: Path) -> None:
    with fake_kubelet([load(NODE)], TOKEN) as k:
        url = k.url + "/pods"
    code, _, err = run(fake_v1, url, token_file, "--timeout", "1")
    assert (
        code == 1
        and "Traceback" not in err
        and err.strip().splitlines()[-1].startswith("memcgctl:")
    )


def test_api_server_field_selector(fake_v1: FakeHost, token_file: Path) -> None:
    doc = load("apiserver-list-constructed.json")
    where = build(pods_of(doc), "cgroupfs", fake_v1.cgroup)
    path = "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a"
    with fake_kubelet([doc], TOKEN, path=path) as k:
        code, _, err = run(
            fake_v1, "unused", token_file, "--api-server", k.url + "/", "--node-name", "node-a"
        )
    assert code == 0, err
    assert (
        xattr(fake_v1.path(where["batch/etl-nightly-7f9c2"]))
        == pod_settings(pods_of(doc)[0]).badness
    )
    code, _, err = run(fake_v1, "unused", token_file, "--api-server", "http://127.0.0.1:1")
    assert code == 2 and "--node-name" in err


def test_agent_follows_pods_and_survives_the_kubelet_going_away(
    fake_v1: FakeHost, token_file: Path
) -> None:
    """Pods appear and disappear between requests; the kubelet goes down (the agent
    says so once and keeps the last list: a known pod's new cgroup still gets its
    badness); it comes back (said once); SIGTERM ends the agent with status 0."""
    full = load(NODE)
    pods = pods_of(full)
    first = dict(full, items=full["items"][:2])
    where = build(pods, "cgroupfs", fake_v1.cgroup)
    late = pods[-2]  # listed from the second list on; its cgroup appears while down
    late_dir = fake_v1.path(where[late.label])
    shutil.rmtree(late_dir)
    with fake_kubelet([first, full], TOKEN) as k:
        env = dict(os.environ, **fake_v1.cli_env(), MEMCGCTL_CGROUP_ROOT=str(fake_v1.cgroot))
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memcgctl",
                "kube",
                "--interval",
                "0.1",
                "--namespace",
                "trusted",
                "--kubelet-url",
                k.url + "/pods",
                "--token-file",
                str(token_file),
                "--timeout",
                "2",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            first_two = [fake_v1.path(where[p.label]) for p in pods[:2]]
            wait_until(lambda: all(xattr(d) is not None for d in first_two), "first pods")
            third = fake_v1.path(where[pods[2].label])
            wait_until(lambda: xattr(third) is not None, "a pod added to the list")
            k.down = True
            seen = len(k.requests)
            wait_until(lambda: len(k.requests) > seen + 3, "requests while down")
            fake_v1.cgroup(where[late.label])
            wait_until(lambda: xattr(late_dir) == pod_settings(late).badness, "late cgroup")
            k.down = False
            seen = k.served_count()
            wait_until(lambda: k.served_count() > seen + 2, "requests after recovery")
        finally:
            agent.send_signal(signal.SIGTERM)
            out, err = agent.communicate(timeout=10)
    assert agent.returncode == 0, err
    lines = err.splitlines()
    down = [ln for ln in lines if "keeping the last known state" in ln]
    assert len(down) == 1 and down[0].startswith("<4>kube: ") and "HTTP 503" in down[0]
    assert len([ln for ln in lines if "reachable again" in ln]) == 1
    assert "Traceback" not in err
    assert f"for {late.label}" in out


@pytest.mark.parametrize(
    "body", [b"not json", b"[" * 100_000, b'{"kind": "NodeList", "items": []}']
)
def test_garbage_from_the_source_is_one_line(
    fake_v1: FakeHost, token_file: Path, body: bytes
) -> None:
    with fake_kubelet([body], TOKEN) as k:
        code, out, err = run(fake_v1, k.url + "/pods", token_file)
    assert code == 1 and out == "" and "Traceback" not in err
    assert err.splitlines()[-1].startswith("memcgctl: ")


# -- issue 21 item 10: --timeout is one deadline for the whole request -------------------


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA) and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _server_tls(pair: tuple[Path, Path]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*pair)
    return ctx


def test_https_kubelet_with_its_ca(
    fake_v1: FakeHost, token_file: Path, tls_pair: tuple[Path, Path]
) -> None:
    """The deadline's socket carries TLS too: a whole answer over HTTPS works."""
    doc = load(NODE)
    where = build(pods_of(doc), "systemd", fake_v1.cgroup)
    with fake_kubelet([doc], TOKEN) as k:
        k.server.socket = _server_tls(tls_pair).wrap_socket(k.server.socket, server_side=True)
        url = f"https://127.0.0.1:{k.port}/pods"
        code, out, err = run(fake_v1, url, token_file, "--ca-file", str(tls_pair[0]))
    assert code == 0 and "set badness" in out, err
    assert all(xattr(fake_v1.path(d)) is not None for d in where.values())


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("drip", ["headers", "body"])
def test_a_kubelet_that_drips_fails_at_the_deadline(
    fake_v1: FakeHost, token_file: Path, tls_pair: tuple[Path, Path], drip: str, tls: bool
) -> None:
    """A kubelet sends the status line (and headers), then one byte a second: each read
    is quick, so a per-read timeout of 2 s never fires.  ``kube --once --timeout 2``
    gives up on the whole request: exit 1, one line naming the kubelet and the
    timeout, and the kubelet sees the connection go away."""
    with slow_kubelet(drip, every=0.5, tls=_server_tls(tls_pair) if tls else None) as k:
        env = dict(os.environ, **fake_v1.cli_env())
        argv = [sys.executable, "-m", "memcgctl", "--cgroup-root", str(fake_v1.cgroot)]
        argv += ["kube", "--once", "--namespace", "trusted", "--kubelet-url", k.url]
        argv += ["--token-file", str(token_file), "--timeout", "2"]
        argv += ["--ca-file", str(tls_pair[0])] if tls else []
        p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = p.communicate(timeout=60)  # without a deadline: 100000 s
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            raise AssertionError("kube --once --timeout 2 still ran after 60 s") from None
        wait_until(lambda: k.dropped == k.connections == 1, "the kubelet to see us leave")
    assert p.returncode == 1, err
    assert out == b""
    assert err.decode() == (f"memcgctl: {k.url}: no complete answer within 2s (--timeout)\n")
