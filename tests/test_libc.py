"""kernel/libc.py: libc's functions by name through _ctypes, as ctypes.CDLL(None,
use_errno=True) calls them (ints and bytes in, a C int out, errno kept), without
importing ctypes itself (issue 22: 0.4 MiB the daemon kept resident)."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memcgctl.kernel.libc import Libc
from memcgctl.kernel.libc import errno as libc_errno

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["_ctypes", "ctypes"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test both ways: through _ctypes, and through ctypes itself (the fallback for
    an interpreter whose _ctypes lacks what it uses)."""
    if request.param == "ctypes":
        monkeypatch.setattr("memcgctl.kernel.libc._LIGHT", False)
    return str(request.param)


@pytest.mark.usefixtures("way")
def test_calls_return_what_ctypes_returns() -> None:
    libc, reference = Libc(), ctypes.CDLL(None, use_errno=True)
    assert libc.getpid() == reference.getpid() == os.getpid()
    assert libc.abs(-7) == reference.abs(-7) == 7  # an int argument is a C int
    assert libc.strlen(b"memcgctl") == 8  # bytes are a char *


@pytest.mark.usefixtures("way")
def test_errno_of_a_failed_call(tmp_path: Path) -> None:
    libc = Libc()
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0
    try:
        assert libc.inotify_add_watch(fd, os.fsencode(tmp_path), 0x100) >= 0  # IN_CREATE
        assert libc.inotify_add_watch(fd, os.fsencode(tmp_path / "gone"), 0x100) == -1
        assert libc_errno() == errno.ENOENT
        assert libc.syscall(448, -1, 0) == -1  # process_mrelease on no pidfd
        assert libc_errno() in (errno.EBADF, errno.ENOSYS)  # (ENOSYS before 5.15)
    finally:
        os.close(fd)


@pytest.mark.usefixtures("way")
def test_a_function_that_does_not_exist_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        Libc().memcgctl_no_such_function  # noqa: B018
    with pytest.raises(AttributeError):
        Libc().__deepcopy__  # noqa: B018 - not looked up in the library


def test_importing_and_calling_it_loads_no_ctypes() -> None:
    code = (
        "import sys; from memcgctl.kernel.libc import Libc; Libc().getpid(); "
        "print(sorted(m for m in sys.modules if 'ctypes' in m))"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    ).stdout
    assert out.strip() == "['_ctypes']"
