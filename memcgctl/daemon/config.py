"""Every setting of one daemon run, validated once: :class:`DaemonConfig`.

The command line (``commands/daemon.py``) parses the options into values and builds
one; :func:`memcgctl.daemon.main.run` takes it from there.  Defaults live here and
nowhere else (the valve's :class:`~memcgctl.daemon.valve.Tuning` and the core's
:class:`~memcgctl.daemon.core.Settings` are derived from it), and so do the few
environment variables the daemon reads (systemd's ``$NOTIFY_SOCKET`` and watchdog).

A value out of range raises :class:`~memcgctl.vocab.errors.UsageProblem` (exit 2)
before the daemon takes anything over.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from memcgctl.daemon.valve import HostLines, Tuning
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import UsageProblem
from memcgctl.vocab.structs import dataclass, field, fields

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

POLICIES = ("priority", "kernel")
# What releases the knobs of a daemon that died, stopped or hangs: a guardian process of
# our own, systemd (the unit's ExecStopPost= and WatchdogSec=), or nothing.
GUARDIANS = ("process", "systemd", "none")
# systemd's side of sd_notify(3) and sd_watchdog_enabled(3): all the daemon reads of
# its environment (hooks pass the whole environment on to their commands themselves)
SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

HEADROOM = (0.01, 0.5)  # the valve's share of memory.max: (above, at most)
PSI_WINDOW_US = (500_000, 10_000_000)  # the kernel's bounds for a PSI trigger window
MIN_RESCAN_S = 0.1


def systemd_env(environ: Mapping[str, str] | None = None) -> Mapping[str, str]:
    """The systemd variables of ``environ`` (default: this process's environment)."""
    e = os.environ if environ is None else environ
    return MappingProxyType({k: e[k] for k in SYSTEMD_ENV if k in e})


@dataclass(frozen=True)
class DaemonConfig:
    """One daemon run.  Durations in seconds unless the name says otherwise; shares
    of memory as fractions (0.1 is 10 %)."""

    root: CgroupPath = ROOT
    policy: str = "priority"
    dry_run: bool = False
    # the core: after a kill, how long an OOM may persist before the next victim; victims
    # per OOM before kill-all of the lowest-priority child
    grace: float = 0.5
    max_rounds: int = 3
    # the host (None: not managed), its lines and its PSI trigger
    host_delay_ms: int | None = None
    host_short: float = 0.10
    host_critical: float = 0.04
    psi_stall_us: int = 150_000
    psi_window_us: int = 1_000_000
    # cgroup v2's valve
    headroom: float = 0.10
    freeze: bool = True
    # how often to look for new delays
    rescan: float = 2.0
    # hooks (sh -c) around a kill, and how long each may run
    pre_kill: str | None = None
    post_kill: str | None = None
    hook_timeout: float = 1.0
    rules_dir: Path | None = None
    # what watches over the daemon, and whether it locks its memory
    guardian: str = "process"
    mlock: bool = True
    systemd_env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise UsageProblem(f"--policy {self.policy!r}: one of {', '.join(POLICIES)}")
        if self.guardian not in GUARDIANS:
            raise UsageProblem(f"--guardian {self.guardian!r}: one of {', '.join(GUARDIANS)}")
        if self.host_delay_ms is not None and not self.root.is_root:
            raise UsageProblem("--host-delay needs --root / (the host is the whole hierarchy)")
        if not 1 <= self.max_rounds <= 100:
            raise UsageProblem(f"--max-rounds {self.max_rounds}: 1 to 100")
        for option, seconds in (("--grace", self.grace), ("--hook-timeout", self.hook_timeout)):
            if not (math.isfinite(seconds) and seconds >= 0):
                raise UsageProblem(f"{option} {seconds!r}: a duration such as 500ms")
        low, high = PSI_WINDOW_US
        if not low <= self.psi_window_us <= high or not 0 < self.psi_stall_us <= self.psi_window_us:
            raise UsageProblem("PSI: need 0 < --psi-stall <= --psi-window, window 500ms-10s")
        if not self.rescan >= MIN_RESCAN_S:
            raise UsageProblem(f"--rescan {_ms(self.rescan)}: at least 100ms")
        _check_share("--headroom", self.headroom, *HEADROOM)
        _check_share("--host-short", self.host_short)
        _check_share("--host-critical", self.host_critical)
        if not 0 < self.host_critical < self.host_short:
            raise UsageProblem("need 0 < --host-critical < --host-short")

    def to_json(self) -> dict[str, Any]:
        """JSON values, read back by :meth:`from_json` (the command line hands the
        config to the interpreter the daemon runs in: commands/daemonrun.py)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["root"] = str(self.root)
        out["rules_dir"] = None if self.rules_dir is None else str(self.rules_dir)
        out["systemd_env"] = dict(self.systemd_env)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DaemonConfig:
        values = dict(data)
        values["root"] = CgroupPath(values["root"])
        rules_dir = values["rules_dir"]
        values["rules_dir"] = None if rules_dir is None else Path(rules_dir)
        values["systemd_env"] = MappingProxyType(dict(values["systemd_env"]))
        return cls(**values)

    @property
    def host_lines(self) -> HostLines:
        # a new episode after recovering half again above the short line (at most 90 %)
        recovered = round(min(self.host_short * 1.5, 0.9), 9)
        return HostLines(short=self.host_short, critical=self.host_critical, recovered=recovered)

    def tuning(self, psi_us: tuple[int, int] | None = None) -> Tuning:
        """The valve's numbers; ``psi_us``: the (stall, window) the kernel will accept
        (without CAP_SYS_RESOURCE it rounds the window up, ``ports.psi_params``)."""
        stall_us, window_us = psi_us or (self.psi_stall_us, self.psi_window_us)
        return Tuning(
            headroom=self.headroom,
            freeze=self.freeze,
            host=self.host_lines,
            psi_stall_us=stall_us,
            psi_window_us=window_us,
        )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g}ms"


def _check_share(option: str, value: float, low: float = 0.0, high: float = 1.0) -> None:
    if not low < value <= high:  # (NaN fails too)
        raise UsageProblem(
            f"{option} {value:.4g}: a share such as 10% (above {low:.0%}, at most {high:.0%})"
        )
