"""--unit NAME: systemd's unit names, the slice naming convention without systemd, and
systemd's own answer when it runs (a stand-in systemctl on a fixture tree)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from memcgctl.cli import cli
from memcgctl.logic.systemdunit import convention_cgroup, follows_convention, slice_path, unit_name
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import NoSuchCgroup, UsageProblem
from tests.fakehost import FakeHost


def test_unit_names_as_systemctl_takes_them() -> None:
    assert unit_name("nginx") == "nginx.service"
    assert unit_name("session-3.scope") == "session-3.scope"
    assert unit_name("getty@tty1") == "getty@tty1.service"
    assert unit_name("my.app") == "my.app.service"  # "app" is no unit type
    for bad in ("a/b", "../x", "", ".service", "a b", "x\n"):
        with pytest.raises(UsageProblem):
            unit_name(bad)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("-.slice", "/"),
        ("system.slice", "/system.slice"),
        ("a-b.slice", "/a.slice/a-b.slice"),
        ("user-1000.slice", "/user.slice/user-1000.slice"),
        ("a-b-c.slice", "/a.slice/a-b.slice/a-b-c.slice"),
    ],
)
def test_slice_paths_spell_out_the_name(name: str, path: str) -> None:
    assert slice_path(name) == CgroupPath(path)


@pytest.mark.parametrize("bad", ["a--b.slice", "-a.slice", "a-.slice", ".slice", "a.service"])
def test_malformed_slice_names_are_refused(bad: str) -> None:
    with pytest.raises(UsageProblem):
        slice_path(bad)


def test_a_unit_is_found_below_slices_named_by_the_convention() -> None:
    cgs = [
        CgroupPath(p)
        for p in (
            "/",
            "/system.slice",
            "/system.slice/a.service",
            "/batch.slice",
            "/batch.slice/batch-nightly.slice",
            "/batch.slice/batch-nightly.slice/job.service",
            "/other/job.service",  # not below slices: not a unit's cgroup
            "/x.slice/y.slice/job.service",  # y.slice is not where x-y.slice would be
        )
    ]
    assert convention_cgroup("a.service", cgs) == [CgroupPath("/system.slice/a.service")]
    assert convention_cgroup("job.service", cgs) == [
        CgroupPath("/batch.slice/batch-nightly.slice/job.service")
    ]
    assert convention_cgroup("batch-nightly.slice", cgs) == [
        CgroupPath("/batch.slice/batch-nightly.slice")
    ]
    assert convention_cgroup("-.slice", cgs) == [ROOT]
    assert not follows_convention(CgroupPath("/x.slice/y.slice/job.service"))


def units_host(tmp_path: Path) -> FakeHost:
    host = FakeHost(tmp_path / "h")
    host.cgroup("/system.slice", limit=None)
    host.cgroup("/system.slice/web.service", limit=1 << 30)
    host.cgroup("/batch.slice/batch-nightly.slice/job.service", limit=1 << 30)
    host.cgroup("/a.slice/twice.service", limit=None)
    host.cgroup("/b.slice/twice.service", limit=None)
    return host


def test_without_systemd_the_convention_names_the_cgroup(tmp_path: Path) -> None:
    env = units_host(tmp_path).env()
    env.systemd_run_dir = tmp_path / "no-systemd"
    assert env.unit_cgroup("web") == "/system.slice/web.service"
    assert env.unit_cgroup("job.service") == "/batch.slice/batch-nightly.slice/job.service"
    assert env.unit_cgroup("batch-nightly.slice") == "/batch.slice/batch-nightly.slice"
    with pytest.raises(NoSuchCgroup, match=r"^absent\.service: no cgroup by that unit name"):
        env.unit_cgroup("absent")
    with pytest.raises(UsageProblem, match="ambiguous"):
        env.unit_cgroup("twice")


def test_with_systemd_its_control_group_is_used(tmp_path: Path) -> None:
    env = units_host(tmp_path).env()
    env.systemd_run_dir = tmp_path / "run-systemd"
    env.systemd_run_dir.mkdir()
    fake = tmp_path / "systemctl"
    fake.write_text(
        '#!/bin/sh\n[ "$1 $2 $3 $4 $5" = "show -p ControlGroup --value --" ] || exit 9\n'
        'case "$6" in\n'
        "  web.service) echo /batch.slice/batch-nightly.slice/job.service ;;\n"
        "  *) echo ;;\n"
        "esac\n"
    )
    os.chmod(fake, stat.S_IRWXU)
    env.systemctl = str(fake)
    # systemd's word wins over the convention
    assert env.unit_cgroup("web") == "/batch.slice/batch-nightly.slice/job.service"
    with pytest.raises(NoSuchCgroup, match="no control group"):
        env.unit_cgroup("stopped.service")


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="systemd runs here")
def test_unit_options_on_the_commands(tmp_path: Path) -> None:
    host = units_host(tmp_path)
    run = CliRunner()
    r = run.invoke(cli, ["set-badness", "--unit", "web", "42"], env=host.cli_env())
    assert r.exit_code == 0, r.output
    assert os.getxattr(host.path("/system.slice/web.service"), "trusted.memcgctl.badness") == b"42"
    r = run.invoke(cli, ["get-badness", "--unit", "web", "--json"], env=host.cli_env())
    assert json.loads(r.stdout)["cgroups"] == [
        {"cgroup": "/system.slice/web.service", "badness": 42, "badness_source": "trusted"}
    ]
    r = run.invoke(cli, ["set-delay", "--unit", "job", "2s"], env=host.cli_env())
    assert r.exit_code == 0, r.output
    r = run.invoke(cli, ["get-delay", "--unit", "job.service", "--json"], env=host.cli_env())
    assert json.loads(r.stdout)["cgroups"][0]["oom_delay_ms"] == 2000
    r = run.invoke(cli, ["predict-victim", "--unit", "web", "--json"], env=host.cli_env())
    assert json.loads(r.stdout)["oom_root"] == "/system.slice/web.service"
    r = run.invoke(cli, ["kill-all", "--unit", "nope", "--dry-run"], env=host.cli_env())
    assert r.exit_code == 3 and r.stderr.strip() == (
        "memcgctl: nope.service: no cgroup by that unit name (systemd is not running)"
    )
    r = run.invoke(cli, ["predict-victim", "/", "--unit", "web"], env=host.cli_env())
    assert r.exit_code == 2
