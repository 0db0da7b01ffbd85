"""The environment of one invocation: the roots, the kernel-file objects and the process registry.

Built once by the root command into ``ctx.obj``; tests build their own with fixture
roots.  Readers are created lazily, so ``--help`` touches nothing.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.hierarchy import Hierarchy, detect_hierarchy, hierarchy_at
from memcgctl.render.diag import warning
from memcgctl.state.store import ProcessRegistry
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import NoSuchCgroup, NoSuchProcess, UsageProblem, Vanished

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from memcgctl.kernel.procfs import ProcFs
    from memcgctl.logic.rules import RuleSet
    from memcgctl.snapshot import BadnessResolver
    from memcgctl.vocab.model import Snapshot


PROC = Path("/proc")
STATE_DIR = Path("/run/memcgctl")
RULES_DIR = Path("/etc/memcgctl/rules.d")


class Env:
    def __init__(
        self,
        cgroup_root: Path | None = None,
        proc_root: Path = PROC,
        kmsg: str = "/dev/kmsg",
        state_dir: Path = STATE_DIR,
        default_state_dir: Path = STATE_DIR,
        rules_dir: Path = RULES_DIR,
        program: bool = False,
    ) -> None:
        self.rules_dir = rules_dir
        # this process is the memcgctl program itself (cli.main), not a caller's: the
        # daemon may then exec an interpreter of its own (commands/daemonrun.py)
        self.program = program
        self.systemd_run_dir = Path("/run/systemd/system")  # tests point these elsewhere
        self.systemctl = "systemctl"
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self.kmsg = kmsg
        self.state_dir = state_dir
        self.default_state_dir = default_state_dir  # where a daemon keeps it by default

    @cached_property
    def hierarchy(self) -> Hierarchy:
        if self.cgroup_root is not None:
            return hierarchy_at(self.cgroup_root)
        return detect_hierarchy(self.proc_root)

    @cached_property
    def fs(self) -> CgroupFs:
        return CgroupFs(self.hierarchy)

    @cached_property
    def proc(self) -> ProcFs:
        from memcgctl.kernel.procfs import ProcFs  # lazily: `get-badness CG` needs no /proc

        return ProcFs(self.proc_root)

    @cached_property
    def registry(self) -> ProcessRegistry:
        self._warn_if_a_daemon_uses_another()
        from memcgctl.state.store import uptime_ticks

        root = str(self.proc_root)
        return ProcessRegistry(
            self.state_dir, self.proc.boot_id(), clock=lambda: uptime_ticks(root)
        )

    @cached_property
    def rules(self) -> RuleSet:
        """The badness rules (``--rules``); the daemon replaces them on reload."""
        from memcgctl.state.rules import load_rules

        return load_rules(self.rules_dir)

    def resolver(self) -> BadnessResolver:
        """How a process's badness is resolved now (registry, rules, inheritance)."""
        from memcgctl.snapshot import BadnessResolver

        return BadnessResolver(self.proc, self.registry.load_entries(), self.rules)

    def running_daemons(self, state_dir: Path) -> list[dict[str, Any]]:
        """The status documents in ``state_dir`` of daemons still running (their
        instance id names this boot and a live pid with the same start time)."""
        from memcgctl.state.daemonstatus import read_statuses

        out = []
        for doc in read_statuses(state_dir):
            try:
                boot, pid, start = str(doc.get("instance")).split("/")
                alive = boot == self.proc.boot_id() and self.proc.start_time(int(pid)) == int(start)
            except (ValueError, Vanished, OSError):
                alive = False
            if alive:
                out.append(doc)
        return out

    def _warn_if_a_daemon_uses_another(self) -> None:
        """Process badness lives in the state directory: with another one than a running
        daemon's (the default's), this command and the daemon disagree silently."""
        default = self.default_state_dir
        if os.path.abspath(self.state_dir) == os.path.abspath(default):
            return
        for doc in self.running_daemons(default):
            warning(
                f"a running daemon (pid {doc.get('pid')}, root {doc.get('root')}) keeps "
                f"process badness in {default}, not in {self.state_dir}: the process "
                "badness this command reads or writes is not what it enforces"
            )

    def check_pid(self, pid: int) -> int:
        if pid <= 0:
            raise UsageProblem(f"pid {pid}: not a valid pid")
        if not self.proc.exists(pid):
            raise NoSuchProcess(pid)
        return pid

    def cgroup_of_pid(self, pid: int) -> CgroupPath:
        self.check_pid(pid)
        try:
            path = self.proc.memory_cgroup(pid, self.fs.version)
        except Vanished:
            raise NoSuchProcess(pid) from None
        return self.fs.resolve(self.fs.from_proc_path(path))

    def unit_cgroup(self, text: str) -> CgroupPath:
        """``--unit NAME``: the unit's cgroup, from systemd when it runs (PID 1), else
        by the slice naming convention (logic/systemdunit.py)."""
        from memcgctl.inputs.systemd import control_group, systemd_running
        from memcgctl.logic.systemdunit import convention_cgroup, unit_name

        unit = unit_name(text)
        if systemd_running(self.systemd_run_dir):
            path = control_group(unit, self.systemctl)
            if path is None:
                raise NoSuchCgroup(unit, "no control group (is the unit loaded and running?)")
            return self.fs.resolve(path)
        found = [cg for cg in convention_cgroup(unit, self.fs.walk()) if self.fs.exists(cg)]
        if not found:
            raise NoSuchCgroup(unit, "no cgroup by that unit name (systemd is not running)")
        if len(found) > 1:
            raise UsageProblem(f"{unit}: ambiguous, {len(found)} cgroups: {', '.join(found)}")
        return found[0]

    def target_cgroup(
        self, name: str | None, pid: int | None, default: str = "/", unit: str | None = None
    ) -> CgroupPath:
        """A command's CG argument, ``--pid`` or ``--unit``: the validated hierarchy path."""
        if sum(x is not None for x in (name, pid, unit)) > 1:
            raise UsageProblem("give one of a cgroup, --pid or --unit (not both)")
        if unit is not None:
            return self.unit_cgroup(unit)
        if pid is not None:
            return self.cgroup_of_pid(pid)
        return self.fs.resolve(name if name is not None else default)

    def is_alive(self, pid: int, start_time: int) -> bool:
        try:
            return self.proc.start_time(pid) == start_time
        except (Vanished, ValueError):
            return False

    def snapshot(
        self,
        root: CgroupPath = ROOT,
        with_processes: bool = True,
        with_oom_score: bool = False,
        lazy: bool = False,
        budget: int | None = None,
    ) -> Snapshot:
        from memcgctl.snapshot import take_snapshot

        return take_snapshot(
            self.fs,
            self.proc,
            self.registry,
            root,
            with_processes,
            with_oom_score,
            self.rules if with_processes else None,
            lazy,
            budget,
        )
