"""The kernel log as the daemon follows it: the kernel's own OOM kills as they are
logged (the history at start skipped), and each victim as a process record, so the
daemon can report the kills it did not prevent and, in shadow mode, compare them with
the policy's choice.
"""

from __future__ import annotations

from memcgctl.env import Env
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.model import ProcessInfo
from memcgctl.vocab.records import KernelEvent


class KernelLog:
    """The kernel log from now on (history skipped): OOM kills as they are logged, so
    the daemon can report the kernel's own victims (shadow mode, and kills it lost)."""

    def __init__(self, env: Env) -> None:
        from memcgctl.kernel.kmsgdev import KmsgReader
        from memcgctl.logic.oomassembler import OomAssembler

        self.reader = KmsgReader(env.kmsg).open()
        self.reader.skip_history()  # the history: not ours to report
        self.asm = OomAssembler(env.proc.boot_time(), env.proc.boot_id())

    def fileno(self) -> int:
        return self.reader.fileno() if self.reader.is_device else -1

    def kills(self) -> list[KernelEvent]:
        from memcgctl.logic.oomassembler import kmsg_events

        events = kmsg_events(self.asm, self.reader.read_available())
        return [e for e in events if e.get("kind") == "oom_kill"]

    def close(self) -> None:
        self.reader.close()


def victim_info(ev: KernelEvent, cgroup: CgroupPath) -> ProcessInfo:
    """The kernel's victim as a process record, from its kill line (it is gone from
    /proc by now).  Its process badness is not known any more: oom_score_adj -1000
    counts as 1000, anything else as the default."""
    from memcgctl.vocab.constants import fallback_badness

    adj = int(ev.get("oom_score_adj") or 0)
    badness, source = fallback_badness(adj)
    return ProcessInfo(
        pid=int(ev["pid"]),
        comm=str(ev.get("comm", "?")),
        cgroup=cgroup,
        uid=int(ev.get("uid") or 0),
        rss_anon_kb=int(ev.get("anon_rss_kb") or 0),
        rss_file_kb=int(ev.get("file_rss_kb") or 0),
        rss_shmem_kb=int(ev.get("shmem_rss_kb") or 0),
        swap_kb=0,
        pgtables_kb=int(ev.get("pgtables_kb") or 0),
        oom_score_adj=adj,
        badness=badness,
        badness_source=source,
        killable=True,
    )
