"""The environment of one invocation: the roots, the kernel-file objects and the process registry.

Built once by the root command into ``ctx.obj``; tests build their own with fixture
roots.  Readers are created lazily, so ``--help`` touches nothing.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from memcgctl.kernel.cgroupfs import CgroupFs
from memcgctl.kernel.hierarchy import Hierarchy, detect_hierarchy, hierarchy_at
from memcgctl.state.store import ProcessRegistry
from memcgctl.vocab.cgpath import ROOT, CgroupPath
from memcgctl.vocab.errors import NoSuchProcess, UsageProblem, Vanished

if TYPE_CHECKING:
    from memcgctl.kernel.procfs import ProcFs
    from memcgctl.vocab.model import Snapshot


PROC = Path("/proc")
STATE_DIR = Path("/run/memcgctl")


class Env:
    def __init__(
        self,
        cgroup_root: Path | None = None,
        proc_root: Path = PROC,
        kmsg: str = "/dev/kmsg",
        state_dir: Path = STATE_DIR,
    ) -> None:
        self.cgroup_root = cgroup_root
        self.proc_root = proc_root
        self.kmsg = kmsg
        self.state_dir = state_dir

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
        return ProcessRegistry(self.state_dir, self.proc.boot_id())

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

    def target_cgroup(self, name: str | None, pid: int | None, default: str = "/") -> CgroupPath:
        """A command's CG argument or ``--pid``: the validated hierarchy path."""
        if name is not None and pid is not None:
            raise UsageProblem("give a cgroup or --pid, not both")
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
    ) -> Snapshot:
        from memcgctl.snapshot import take_snapshot

        return take_snapshot(
            self.fs, self.proc, self.registry, root, with_processes, with_oom_score, lazy
        )
