"""The exception hierarchy (no click), from_oserror's mapping by what was missing, the
one stderr prefix, and cli.py as the one place that turns errors into exit codes."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from memcgctl.cli import MemcgctlGroup, cli
from memcgctl.logic.kube import PodListError
from memcgctl.render import diag
from memcgctl.state.statedir import Corrupt
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import (
    CommandNotExecutable,
    CommandNotFound,
    ExitStatus,
    Malformed,
    MemcgctlError,
    NoSuchCgroup,
    NoSuchFile,
    NoSuchProcess,
    NotSupported,
    OperationFailed,
    OwnedElsewhere,
    PermissionDenied,
    UsageProblem,
    from_oserror,
)
from tests.fakehost import FakeHost

ROOT = Path(__file__).resolve().parent.parent


def test_exit_statuses_are_the_documented_ones() -> None:
    assert [int(s) for s in ExitStatus] == [0, 1, 2, 3, 4, 5, 126, 127]
    assert OperationFailed.status == 1 and UsageProblem.status == 2
    assert NoSuchCgroup.status == 3 and NoSuchProcess.status == 3
    assert PermissionDenied.status == 4 and NotSupported.status == 5
    assert CommandNotExecutable.status == 126 and CommandNotFound.status == 127
    assert OwnedElsewhere.status == 1 and NoSuchFile.status == 1


def test_errors_are_plain_exceptions_carrying_what_they_are_about() -> None:
    exc = NoSuchCgroup("/batch")
    assert not isinstance(exc, click.ClickException)
    assert str(exc) == exc.message == "/batch: no such cgroup"
    assert (exc.cgroup, exc.pid, exc.path, exc.errno) == ("/batch", None, None, None)
    p = NoSuchProcess(42)
    assert str(p) == "pid 42: no such process" and p.pid == 42
    f = NoSuchFile("/x/mountinfo")
    assert str(f) == "/x/mountinfo: no such file or directory" and f.path == "/x/mountinfo"
    assert isinstance(Corrupt("bad"), Malformed) and Corrupt("bad").reason == "bad"
    assert isinstance(PodListError("no items"), Malformed)
    assert not isinstance(Corrupt("bad"), MemcgctlError)


def _oserror(code: int, filename: str | None = "/m/batch/memory.limit") -> OSError:
    return OSError(code, os.strerror(code), filename)


def test_enoent_of_a_cgroup_is_no_such_cgroup() -> None:
    exc = from_oserror(_oserror(errno.ENOENT), cgroup="/batch")
    assert isinstance(exc, NoSuchCgroup) and exc.status == ExitStatus.NOT_FOUND
    assert str(exc) == "/m/batch/memory.limit: no such file or directory"
    assert (exc.cgroup, exc.path, exc.errno) == ("/batch", "/m/batch/memory.limit", errno.ENOENT)


def test_enoent_of_a_file_is_not_no_such_cgroup() -> None:
    exc = from_oserror(_oserror(errno.ENOENT, "/nonexistent/self/mountinfo"))
    assert isinstance(exc, NoSuchFile) and not isinstance(exc, NoSuchCgroup)
    assert exc.status == ExitStatus.FAILED
    assert str(exc) == "/nonexistent/self/mountinfo: no such file or directory"
    assert exc.path == "/nonexistent/self/mountinfo" and exc.cgroup is None
    named = from_oserror(_oserror(errno.ENODEV, "/dev/x"), "the kernel log")
    assert isinstance(named, NoSuchFile) and str(named) == "the kernel log: no such device"
    assert named.path == "/dev/x"


def test_esrch_or_a_pid_is_no_such_process() -> None:
    exc = from_oserror(_oserror(errno.ESRCH, None), pid=42)
    assert isinstance(exc, NoSuchProcess) and str(exc) == "pid 42: no such process"
    assert exc.pid == 42 and exc.errno == errno.ESRCH
    # writing a gone pid to cgroup.procs: the process is missing, the file is not
    exc = from_oserror(_oserror(errno.ESRCH, "/m/batch/cgroup.procs"))
    assert isinstance(exc, NoSuchProcess)
    assert str(exc) == "/m/batch/cgroup.procs: no such process"


@pytest.mark.parametrize(
    ("code", "cls", "text"),
    [
        (errno.EACCES, PermissionDenied, "/f: permission denied (Permission denied)"),
        (errno.EPERM, PermissionDenied, "/f: permission denied (Operation not permitted)"),
        (errno.EOPNOTSUPP, NotSupported, "/f: not supported here (Operation not supported)"),
        (errno.EIO, OperationFailed, "/f: Input/output error"),
    ],
)
def test_other_errnos(code: int, cls: type[MemcgctlError], text: str) -> None:
    exc = from_oserror(_oserror(code, "/f"), cgroup="/c")
    assert type(exc) is cls and str(exc) == text
    assert (exc.cgroup, exc.path, exc.errno) == ("/c", "/f", code)


def test_make_under_a_missing_parent_is_no_such_cgroup(fake_v1: FakeHost) -> None:
    fs = fake_v1.env().fs
    with pytest.raises(NoSuchCgroup) as info:
        fs.make(CgroupPath("/gone/child"))
    assert info.value.cgroup == "/gone/child" and info.value.status == 3


def test_missing_proc_root_is_named_not_no_such_cgroup(fake_v1: FakeHost) -> None:
    env = {**fake_v1.cli_env(), "MEMCGCTL_PROC_ROOT": "/nonexistent"}
    env.pop("MEMCGCTL_CGROUP_ROOT", None)
    r = CliRunner().invoke(cli, ["--proc-root", "/nonexistent", "tree"], env=env)
    assert r.exit_code == 1, r.output
    assert r.stderr == "memcgctl: /nonexistent/self/mountinfo: no such file or directory\n"
    assert "no such cgroup" not in r.output


def test_missing_cgroup_is_still_exit_3(fake_v1: FakeHost) -> None:
    r = CliRunner().invoke(cli, ["tree", "/nope"], env=fake_v1.cli_env())
    assert r.exit_code == 3 and r.stderr == "memcgctl: /nope: no such cgroup\n"


class _Raises(click.ParamType):  # type: ignore[type-arg,unused-ignore]
    name = "raises"

    def convert(self, value: object, param: click.Parameter | None, ctx: object) -> object:
        raise PermissionDenied(f"{value}: permission denied (in a param type)")


def _group() -> click.Group:
    @click.group(cls=MemcgctlGroup)
    def top() -> None:
        pass

    @top.command()
    @click.argument("what", type=_Raises())
    def param(what: str) -> None:
        pass

    @top.command()
    def body() -> None:
        raise NoSuchFile("/x/y\x1b[31m")

    @top.command()
    def oserror() -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/z")

    @top.command()
    def abort() -> None:
        raise click.Abort

    return top


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["param", "v"], 4, "memcgctl: v: permission denied (in a param type)"),
        (["body"], 1, "memcgctl: /x/y?[31m: no such file or directory"),
        (["oserror"], 1, "memcgctl: /x/z: no such file or directory"),
        (["abort"], 1, "memcgctl: aborted"),
        (["nope"], 2, "memcgctl: No such command 'nope' (see --help)"),
        (["body", "--x"], 2, "memcgctl: body: No such option"),  # click's wording varies
    ],
)
def test_cli_maps_every_error_to_one_line_and_its_status(
    args: list[str], code: int, line: str
) -> None:
    r = CliRunner().invoke(_group(), args)
    assert r.exit_code == code, r.output
    assert r.stdout == "" and r.stderr.endswith("\n")
    (only,) = r.stderr.splitlines()
    assert only == line if code != 2 else (only.startswith(line) and only.endswith("help)"))


def test_diag_writes_the_prefix_once(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buf)
    diag.diagnostic("following /a\x07 (Ctrl-C to stop)")
    diag.warning("x: y")
    assert buf.getvalue() == ("memcgctl: following /a? (Ctrl-C to stop)\nmemcgctl: warning: x: y\n")
    buf.close()  # a closed stderr is no reason to fail
    diag.warning("not shown")


def test_no_click_below_the_command_layer() -> None:
    modules = [
        "memcgctl.vocab.errors",
        "memcgctl.render.diag",
        "memcgctl.kernel.cgroupfs",
        "memcgctl.kernel.procfs",
        "memcgctl.kernel.kmsgdev",
        "memcgctl.inputs.logfile",
        "memcgctl.state.statedir",
        "memcgctl.state.journal",
        "memcgctl.state.store",
        "memcgctl.logic.kube",
        "memcgctl.actions.kill",
        "memcgctl.daemon.ports",
        "memcgctl.snapshot",
        "memcgctl.logic.decision",
        "memcgctl.logic.priority",
        "memcgctl.logic.kernelheuristic",
        "memcgctl.env",
    ]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('click' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
