"""A fixture tree: a fake memory-cgroup mount and a fake /proc in a temp dir.

Unit tests point the real readers at it (``Env(cgroup_root=..., proc_root=...)``).
Extended attributes are real xattrs on the temp files (ext4/tmpfs support them).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from memcgctl.env import Env
from tests.realkernel import subdirs

V1_UNLIMITED = 9223372036854771712


@dataclass
class FakeProcess:
    pid: int
    cgroup: str
    comm: str = "proc"
    rss_anon_kb: int = 0
    rss_file_kb: int = 0
    rss_shmem_kb: int = 0
    swap_kb: int = 0
    pgtables_kb: int = 0
    oom_score_adj: int = 0
    oom_score: int = 0
    start_time: int = 0
    uid: int = 0
    kthread: bool = False
    ppid: int = 1


class FakeHost:
    def __init__(
        self,
        base: Path,
        version: int = 1,
        hybrid: bool = False,
        mem_total_kb: int = 16 * 1024 * 1024,
        swap_total_kb: int = 0,
    ) -> None:
        self.base = base
        self.version = version
        self.cgroot = base / "cgroup" / ("memory" if version == 1 else "unified")
        self.proc = base / "proc"
        self.state = base / "state"
        self.processes: dict[int, FakeProcess] = {}
        self.cgroot.mkdir(parents=True)
        (self.proc / "self").mkdir(parents=True)
        (self.proc / "sys/kernel/random").mkdir(parents=True)
        (self.proc / "sys/kernel/random/boot_id").write_text("fake-boot-id\n")
        (self.proc / "sys/kernel/osrelease").write_text("6.1.0-fake\n")
        (self.proc / "meminfo").write_text(
            f"MemTotal:       {mem_total_kb} kB\nMemFree:        {mem_total_kb // 2} kB\n"
            f"SwapTotal:      {swap_total_kb} kB\nSwapFree:       {swap_total_kb} kB\n"
        )
        (self.proc / "vmstat").write_text("nr_free_pages 1000\noom_kill 0\n")
        lines = []
        if version == 1:
            lines.append(f"30 23 0:28 / {self.cgroot} rw,relatime - cgroup cgroup rw,memory")
            if hybrid:
                unified = base / "cgroup" / "unified"
                unified.mkdir()
                (unified / "cgroup.controllers").write_text("hugetlb\n")
                lines.append(f"40 23 0:40 / {unified} rw,relatime - cgroup2 cgroup2 rw")
        else:
            lines.append(f"40 23 0:40 / {self.cgroot} rw,relatime - cgroup2 cgroup2 rw")
        (self.proc / "self/mountinfo").write_text(
            "1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n" + "\n".join(lines) + "\n"
        )
        self.cgroup("/", limit=None)

    # -- cgroups -------------------------------------------------------------------
    def path(self, cg: str) -> Path:
        return self.cgroot if cg == "/" else self.cgroot / cg.lstrip("/")

    def cgroup(
        self,
        cg: str,
        limit: int | None = None,
        usage: int = 0,
        oom_group: bool = False,
        badness: int | None = None,
        delay_ms: int | None = None,
        under_oom: bool = False,
        oom_kill: int = 0,
        events: dict[str, int] | None = None,
        events_local: dict[str, int] | None = None,
        pod: str | None = None,
    ) -> Path:
        d = self.path(cg)
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.procs").touch()
        if self.version == 1:
            (d / "memory.limit_in_bytes").write_text(
                f"{limit if limit is not None else V1_UNLIMITED}\n"
            )
            (d / "memory.memsw.limit_in_bytes").write_text(f"{V1_UNLIMITED}\n")
            (d / "memory.usage_in_bytes").write_text(f"{usage}\n")
            (d / "memory.swappiness").write_text("60\n")
            (d / "memory.oom_control").write_text(
                f"oom_kill_disable 0\nunder_oom {int(under_oom)}\noom_kill {oom_kill}\n"
            )
        else:
            (d / "cgroup.controllers").write_text("cpu memory pids\n")
            if cg != "/":
                (d / "memory.max").write_text(f"{limit if limit is not None else 'max'}\n")
                (d / "memory.swap.max").write_text("max\n")
                (d / "memory.current").write_text(f"{usage}\n")
                (d / "memory.oom.group").write_text(f"{int(oom_group)}\n")
                ev = {
                    "low": 0,
                    "high": 0,
                    "max": 0,
                    "oom": 0,
                    "oom_kill": oom_kill,
                    "oom_group_kill": 0,
                }
                ev.update(events or {})
                (d / "memory.events").write_text("".join(f"{k} {v}\n" for k, v in ev.items()))
                evl = dict(ev)
                evl.update(events_local or {})
                (d / "memory.events.local").write_text(
                    "".join(f"{k} {v}\n" for k, v in evl.items())
                )
        if badness is not None:
            os.setxattr(d, "trusted.memcgctl.badness", str(badness).encode())
        if delay_ms is not None:
            os.setxattr(d, "trusted.memcgctl.oom_delay_ms", str(delay_ms).encode())
        if pod is not None:  # as `memcgctl kube` labels a pod cgroup
            os.setxattr(d, "trusted.memcgctl.pod", pod.encode())
        return d

    # -- processes -------------------------------------------------------------------
    def process(self, pid: int, cgroup: str, **kw: object) -> FakeProcess:
        p = FakeProcess(pid=pid, cgroup=cgroup, **kw)  # type: ignore[arg-type]
        if not p.start_time:
            p.start_time = 1000 + pid
        self.processes[pid] = p
        d = self.proc / str(pid)
        d.mkdir(exist_ok=True)
        mm = (
            ""
            if p.kthread
            else (
                f"VmSize:\t  100000 kB\nVmRSS:\t{p.rss_anon_kb + p.rss_file_kb + p.rss_shmem_kb} kB\n"
                f"RssAnon:\t{p.rss_anon_kb} kB\nRssFile:\t{p.rss_file_kb} kB\n"
                f"RssShmem:\t{p.rss_shmem_kb} kB\nVmPTE:\t{p.pgtables_kb} kB\nVmSwap:\t{p.swap_kb} kB\n"
            )
        )
        (d / "status").write_text(
            f"Name:\t{p.comm}\nState:\tS (sleeping)\nTgid:\t{pid}\nPid:\t{pid}\n"
            f"Uid:\t{p.uid}\t{p.uid}\t{p.uid}\t{p.uid}\nKthread:\t{int(p.kthread)}\n{mm}"
        )
        (d / "comm").write_text(p.comm + "\n")
        (d / "oom_score_adj").write_text(f"{p.oom_score_adj}\n")
        (d / "oom_score").write_text(f"{p.oom_score}\n")
        flags = 0x00200000 if p.kthread else 0x00400100
        fields = (
            ["S", str(p.ppid), str(pid), str(pid), "0", "-1", str(flags)]
            + ["0"] * 12
            + [str(p.start_time)]
        )
        rss_pages = (p.rss_anon_kb + p.rss_file_kb + p.rss_shmem_kb) // 4
        (d / "stat").write_text(f"{pid} ({p.comm}) " + " ".join(fields) + f" 0 {rss_pages}\n")
        line = f"4:memory:{cgroup}" if self.version == 1 else f"0::{cgroup}"
        (d / "cgroup").write_text(line + "\n")
        self._write_procs()
        return p

    def remove_process(self, pid: int) -> None:
        self.processes.pop(pid)
        d = self.proc / str(pid)
        shutil.rmtree(d)
        self._write_procs()

    def _write_procs(self) -> None:
        for p in self.processes.values():  # /proc/PID/task/PID/children, as the kernel's
            task = self.proc / str(p.pid) / "task" / str(p.pid)
            task.mkdir(parents=True, exist_ok=True)
            kids = sorted(c.pid for c in self.processes.values() if c.ppid == p.pid)
            (task / "children").write_text("".join(f"{k} " for k in kids))
        by_cg: dict[str, list[int]] = {}
        for p in self.processes.values():
            by_cg.setdefault(p.cgroup, []).append(p.pid)
        for d in [self.cgroot, *subdirs(self.cgroot)]:
            rel = "/" + str(d.relative_to(self.cgroot)).strip(".").strip("/")
            pids = sorted(by_cg.get(rel if rel != "/" else "/", []))
            (d / "cgroup.procs").write_text("".join(f"{x}\n" for x in pids))

    def env(self, explicit_root: bool = False) -> Env:
        return Env(
            cgroup_root=self.cgroot if explicit_root else None,
            proc_root=self.proc,
            kmsg=str(self.base / "kmsg"),
            state_dir=self.state,
            rules_dir=self.base / "rules.d",  # none: the host's /etc is not the fixture's
        )

    def cli_env(self) -> dict[str, str]:
        """Environment variables pointing the CLI at this tree."""
        return {
            "MEMCGCTL_PROC_ROOT": str(self.proc),
            "MEMCGCTL_STATE_DIR": str(self.state),
            "MEMCGCTL_KMSG": str(self.base / "kmsg"),
            "MEMCGCTL_RULES_DIR": str(self.base / "rules.d"),
        }
