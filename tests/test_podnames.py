"""Pod names beside cgroups: the label ``memcgctl kube`` writes (``memcgctl.pod``, next to
the badness) read into the snapshot — Kubernetes-shaped or not at all, inherited by the
cgroups inside the pod — and shown by ``predict-victim`` and ``explain-kill``, in text
and as the ``pod`` key of their JSON (null when unknown)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.logic.kube import pod_label_ok
from memcgctl.logic.logtext import read_lines
from memcgctl.logic.oomassembler import collect
from memcgctl.logic.postmortem import explain_report
from memcgctl.logic.reportsnapshot import LiveInfo
from memcgctl.render.explain import kill_explanation_json, kill_summary_lines, priority_lines
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.podname import POD_LABEL_MAX, parse_pod_label, valid_pod_label
from tests.fakehost import FakeHost
from tests.test_postmortem import REPORT_5X, _log

MIB = 1 << 20
UID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
TIER = "/kubepods/besteffort"
POD = f"{TIER}/pod{UID}"
CTR = f"{POD}/{'4f1c0ffee0ddba11' * 4}"
LOW = "ci/ci-runner-6f8b9c7d4-qw8rt"
HIGH = "shop/api-7c9f8d6b5-x2kqz"

GOOD = [
    "default/web-0",
    "kube-system/coredns-5dd5756b68-2zrhr",
    "a/b",
    "ns-1/name.with.dots-2",
    "x" * 63 + "/" + ".".join(["y" * 63] * 4)[:253].rstrip("."),
]
BAD = [
    "",
    "noslash",
    "a/b/c",
    "/name",
    "ns/",
    "NS/web",  # upper case
    "ns/Web",
    "ns_1/web",
    "ns/web_1",
    "-ns/web",
    "ns-/web",
    "ns/web-",
    "ns/.web",
    "ns/web..x",
    "ns.x/web",  # a namespace is a label: no dots
    "x" * 64 + "/web",
    "ns/" + "y" * 254,
    "ns/\x1b[31mred",
    "ns/ünï",
    "ns/web\n",
    "ns/web ",
]


@pytest.mark.parametrize("label", GOOD)
def test_kubernetes_shaped_labels_are_accepted(label: str) -> None:
    assert len(label) <= POD_LABEL_MAX
    assert valid_pod_label(label) and pod_label_ok(label)
    assert parse_pod_label(label.encode()) == label


@pytest.mark.parametrize("label", BAD)
def test_anything_else_is_no_label(label: str) -> None:
    assert not valid_pod_label(label) and not pod_label_ok(label)
    assert parse_pod_label(label.encode("utf-8", "surrogateescape")) is None


def test_raw_bytes_that_are_no_label() -> None:
    assert parse_pod_label(None) is None
    assert parse_pod_label(b"ns/web\0") is None
    assert parse_pod_label(b"ns/\xffweb") is None
    assert parse_pod_label(b"ns/" + b"a" * 5000) is None


def kube_host(host: FakeHost) -> FakeHost:
    """A node of the cgroupfs driver: a BestEffort pod (tier and pod at badness 10,
    the pod labelled), a Guaranteed pod, and the processes in the containers."""
    host.cgroup("/kubepods", limit=1024 * MIB)
    host.cgroup(TIER, badness=10)  # the agent's tier: badness, no pod
    host.cgroup(POD, badness=10, pod=LOW)
    host.cgroup(CTR)
    host.cgroup(f"/kubepods/pod{UID[::-1]}", badness=500, pod=HIGH)
    host.cgroup(f"/kubepods/pod{UID[::-1]}/ctr")
    host.process(1, "/", comm="init", rss_anon_kb=100)
    host.process(400, CTR, comm="runner", rss_anon_kb=20_000)
    host.process(500, f"/kubepods/pod{UID[::-1]}/ctr", comm="api", rss_anon_kb=500_000)
    return host


def test_the_snapshot_carries_the_pod_and_inherits_it(fake_v1: FakeHost) -> None:
    host = kube_host(fake_v1)
    host.cgroup("/loose", pod="a/b")  # a label without a badness: not read
    host.cgroup("/shouting", badness=5, pod="NS/Bad")
    host.cgroup("/user", limit=None)
    os.setxattr(host.path("/user"), "user.memcgctl.badness", b"7")
    os.setxattr(host.path("/user"), "user.memcgctl.pod", b"team/job-1")
    host.cgroup("/mixed", badness=8)
    os.setxattr(host.path("/mixed"), "user.memcgctl.pod", b"team/job-2")
    host.cgroup("/delegated")  # a user.* label where the delegation rule refuses it
    os.setxattr(host.path("/delegated"), "user.memcgctl.badness", b"7")
    os.setxattr(host.path("/delegated"), "user.memcgctl.pod", b"team/job-3")
    os.chown(host.path("/delegated"), 65534, 65534)
    snap = host.env().snapshot(CgroupPath("/"))
    pods = {str(p): cg.pod for p, cg in snap.cgroups.items()}
    assert pods[POD] == LOW and pods[CTR] == LOW  # the container is the pod's
    assert pods[f"/kubepods/pod{UID[::-1]}/ctr"] == HIGH
    assert pods[TIER] is None and pods["/kubepods"] is None and pods["/"] is None
    assert pods["/loose"] is None and pods["/shouting"] is None
    assert pods["/user"] == "team/job-1"  # beside a user.* badness that counts
    assert pods["/delegated"] is None
    assert pods["/mixed"] is None  # the badness is trusted.*; the label only user.*
    assert snap.pod_of(CgroupPath(CTR)) == LOW and snap.pod_of(CgroupPath("/nope")) is None


def test_a_snapshot_rooted_inside_the_pod_knows_it(fake_v1: FakeHost) -> None:
    snap = kube_host(fake_v1).env().snapshot(CgroupPath(CTR))
    assert snap.cgroups[CgroupPath(CTR)].pod == LOW


def _predict(host: FakeHost, *args: str) -> Any:
    r = CliRunner().invoke(cli, ["predict-victim", *args], env=host.cli_env())
    assert r.exit_code == 0, r.output
    return r


def test_predict_victim_json_names_the_pod(fake_v1: FakeHost) -> None:
    host = kube_host(fake_v1)
    doc = json.loads(_predict(host, "--json", "--top", "3").stdout)
    assert doc["victim"]["pid"] == 400 and doc["victim"]["pod"] == LOW
    assert doc["candidates"][0]["pod"] == LOW
    assert doc["runners_up"][0]["victim"]["pod"] == LOW
    chosen = [lv["chosen"] for lv in doc["walk"]]
    assert [c["pod"] for c in chosen] == [None, None, LOW, LOW, LOW]
    assert [lv["pod"] for lv in doc["walk"]] == [None, None, None, LOW, LOW]
    doc = json.loads(_predict(host, "--json", "--policy", "kernel").stdout)
    assert {c["pid"]: c["pod"] for c in doc["candidates"]} == {400: LOW, 500: HIGH}
    assert doc["victim"]["pid"] == 500 and doc["victim"]["pod"] == HIGH


def test_predict_victim_explain_names_the_pod_where_it_starts(fake_v1: FakeHost) -> None:
    host = kube_host(fake_v1)
    out = _predict(host, "--explain", "--plain").stdout
    with_pod = [ln for ln in out.splitlines() if "(pod " in ln]
    assert any(f"cgroup pod{UID} (pod {LOW})" in ln and "►" in ln for ln in with_pod), out
    assert any(f"cgroup pod{UID[::-1]} (pod {HIGH})" in ln for ln in with_pod), out
    assert not any("cgroup ctr" in ln or "cgroup 4f1c" in ln for ln in with_pod), out
    assert f"victim: pid 400 (runner) in {CTR} (pod {LOW})" in out
    out = _predict(host, "--explain", "--plain", "--policy", "kernel").stdout
    assert f"pid 500 (api) in /kubepods/pod{UID[::-1]}/ctr (pod {HIGH})" in out
    # inside the pod: the root names it
    out = _predict(host, POD, "--explain", "--plain").stdout
    assert f"OOM root {POD} (pod {LOW})" in out


def test_a_hostile_label_is_neither_shown_nor_keyed(fake_v1: FakeHost) -> None:
    host = kube_host(fake_v1)
    os.setxattr(host.path(POD), "trusted.memcgctl.pod", b"ns/\x1b[2Jevil")
    out = _predict(host, "--explain", "--plain").stdout
    assert "evil" not in out and "\x1b" not in out
    doc = json.loads(_predict(host, "--json").stdout)
    assert doc["victim"]["pod"] is None


def test_one_grammar_whether_or_not_the_pod_is_known(fake_v1: FakeHost, tmp_path: Any) -> None:
    known = kube_host(fake_v1)
    plain = FakeHost(tmp_path / "plain", version=1)
    plain.cgroup("/kubepods", limit=1024 * MIB)
    plain.cgroup(TIER, badness=10)
    plain.cgroup(POD, badness=10)
    plain.cgroup(CTR)
    plain.cgroup(f"/kubepods/pod{UID[::-1]}", badness=500)
    plain.cgroup(f"/kubepods/pod{UID[::-1]}/ctr")
    plain.process(1, "/", comm="init", rss_anon_kb=100)
    plain.process(400, CTR, comm="runner", rss_anon_kb=20_000)
    plain.process(500, f"/kubepods/pod{UID[::-1]}/ctr", comm="api", rss_anon_kb=500_000)
    for args in (["--json", "--top", "3"], ["--json", "--policy", "kernel"]):
        a = json.loads(_predict(known, *args).stdout)
        b = json.loads(_predict(plain, *args).stdout)
        assert a["victim"]["pod"] == LOW or a["victim"]["pod"] == HIGH
        assert b["victim"]["pod"] is None
        assert keys_of(a) == keys_of(b)


def keys_of(doc: Any, where: str = "") -> set[str]:
    """Every key path in a document (list items merged)."""
    out: set[str] = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.add(f"{where}.{k}")
            out |= keys_of(v, f"{where}.{k}")
    elif isinstance(doc, list):
        for item in doc:
            out |= keys_of(item, f"{where}[]")
    return out


# -- explain-kill ----------------------------------------------------------------------


def test_the_report_snapshot_takes_the_pod_from_the_live_lookup() -> None:
    report, _ = collect(read_lines([_log("dmesg", REPORT_5X)]))
    assert report is not None

    def live_cgroup(path: CgroupPath) -> LiveInfo | None:
        if path == "/batch":
            return LiveInfo(path, 300, "trusted", "batch/nightly-etl")
        return None

    x = explain_report(report, None, None, live_cgroup)
    root = CgroupPath("/batch/job 1")
    assert x.oom_root == root and x.snapshot.pod_of(root) == "batch/nightly-etl"
    assert "(pod batch/nightly-etl)" in kill_summary_lines(x)[0]
    assert "(pod batch/nightly-etl)" in priority_lines(x)[0]
    doc = kill_explanation_json(x)
    assert doc["kernel"]["victim"]["pod"] == "batch/nightly-etl"
    assert {c["pod"] for c in doc["kernel"]["candidates"]} == {"batch/nightly-etl"}
    assert doc["priority"]["victim"]["pod"] == "batch/nightly-etl"
    bare = kill_explanation_json(explain_report(report))
    assert bare["kernel"]["victim"]["pod"] is None
    assert keys_of(bare) == keys_of(doc)


def test_explain_kill_on_this_machine_names_the_pod(fake_v1: FakeHost) -> None:
    host = fake_v1
    host.cgroup("/batch", limit=512 * MIB, badness=300, pod="batch/nightly-etl")
    host.cgroup("/batch/job 1", limit=100 * MIB)
    (host.base / "kmsg").write_bytes(_log("kmsg", REPORT_5X, noise=False))
    r = CliRunner().invoke(cli, ["explain-kill", "--json"], env=host.cli_env())
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["kernel"]["victim"]["pid"] == 4242
    assert doc["kernel"]["victim"]["pod"] == "batch/nightly-etl"
    assert doc["kernel"]["walk"] == [] and doc["priority"]["walk"][0]["pod"] == "batch/nightly-etl"
    r = CliRunner().invoke(cli, ["explain-kill", "--plain"], env=host.cli_env())
    assert r.exit_code == 0, r.output
    assert "memcg OOM of /batch/job 1 (pod batch/nightly-etl)" in r.stdout
    assert "killed: pid 4242 (stress) (pod batch/nightly-etl)" in r.stdout
    assert "pid 4200 (bash) in /batch/job 1 (pod batch/nightly-etl)" in r.stdout
