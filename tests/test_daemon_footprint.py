"""What the daemon keeps resident: mlockall locks pages as they are touched (MCL_ONFAULT),
falling back to the older flags on kernels that refuse it."""

from __future__ import annotations

import ctypes

import pytest

from memcgctl.daemon import main as daemon_main

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4


class FakeLibc:
    def __init__(self, refuse: set[int]) -> None:
        self.refuse = refuse
        self.calls: list[int] = []

    def mlockall(self, flags: int) -> int:
        self.calls.append(flags)
        return -1 if flags in self.refuse else 0


@pytest.mark.parametrize(
    ("refuse", "calls"),
    [
        (set(), [MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT]),
        (  # a kernel before 4.4: EINVAL for MCL_ONFAULT, then the old flags
            {MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT},
            [MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, MCL_CURRENT | MCL_FUTURE],
        ),
    ],
)
def test_mlockall_locks_on_fault_first(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    refuse: set[int],
    calls: list[int],
) -> None:
    libc = FakeLibc(refuse)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: libc)
    daemon_main.mlockall()
    assert libc.calls == calls
    assert "mlockall failed" not in capsys.readouterr().err


def test_mlockall_refused_altogether_is_one_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    libc = FakeLibc({MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, MCL_CURRENT | MCL_FUTURE})
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: libc)
    daemon_main.mlockall()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mlockall failed" in err[0] and "continuing" in err[0]
