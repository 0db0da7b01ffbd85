"""A Kubernetes node's scale in a test parent (issue 22), for the real-kernel tests and
the benchmarks (bench/scale_bench.py on v1, bench/scale_v2_bench.py in the v2 guest):
``kubepods/{guaranteed,burstable,besteffort}/pod<N>`` with 4 containers each and 2
cgroups inside each container (the pause and app scopes), a memory limit on every pod;
``system.slice`` with services; and sleeping processes spread over the leaves, forked
by one small C program (``busybox sleep`` without a compiler).

On cgroup v2 :meth:`TestCgroups.make` enables the memory (and pids) controller in every
parent's ``cgroup.subtree_control``, as the kubelet does down to the containers, so each
cgroup is a memcg; the sleepers live in leaves only (no internal processes)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.realkernel import TestCgroups

FORKER_C = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
/* stdin: one cgroup.procs path per line; for each, fork a child that moves itself
   there and sleeps.  Prints "ready" when all are placed. */
int main(void) {
    char line[8192];
    while (fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = 0;
        pid_t pid = fork();
        if (pid == 0) {
            close(0);
            close(1);
            int fd = open(line, O_WRONLY);
            if (fd >= 0) { write(fd, "0", 1); close(fd); }
            for (;;) pause();
        }
    }
    puts("ready");
    fflush(stdout);
    for (;;) pause();
}
"""

QOS = ("guaranteed", "burstable", "besteffort")
CGROUPS_PER_POD = 13  # the pod, 4 containers, 2 scopes in each


def build_tree(tc: TestCgroups, pods: int) -> tuple[list[str], list[str]]:
    """The pods' tree; returns (every container's leaf cgroups, pod cgroups)."""
    leaves: list[str] = []
    pod_cgs: list[str] = []
    tc.make("kubepods", limit=None)
    for q in QOS:
        tc.make(f"kubepods/{q}", limit=None)
    for i in range(pods):
        pod = tc.make(f"kubepods/{QOS[i % 3]}/pod{i:04}", limit=64 << 20)
        pod_cgs.append(pod)
        for c in range(4):
            tc.make(f"{pod.split('/', 2)[2]}/c{c}", limit=None)
            for leaf in ("pause", "app"):
                leaves.append(tc.make(f"{pod.split('/', 2)[2]}/c{c}/{leaf}", limit=None))
    return leaves, pod_cgs


def build_system(tc: TestCgroups, services: int) -> list[str]:
    """The node's services: ``system.slice/svcNNNN.service``."""
    tc.make("system.slice", limit=None)
    return [tc.make(f"system.slice/svc{s:04}.service", limit=None) for s in range(services)]


def node_shape(total: int) -> tuple[int, int]:
    """(pods, services) for about ``total`` cgroups, four in five of them the pods'
    (5,000: 300 pods and 1,095 services)."""
    pods = max(1, round(total * 0.78 / CGROUPS_PER_POD))
    return pods, max(0, total - 5 - CGROUPS_PER_POD * pods)


def start_sleepers(
    tc: TestCgroups, leaves: list[str], n: int, work: Path, home: str | None = None
) -> int:
    """n sleeping processes spread over the leaves; returns how many are running.  The
    forker runs in ``home`` (default: the test parent, v1; on v2 a leaf of its own, as
    a cgroup with children holds no processes there)."""
    cc = shutil.which("cc")
    paths = [str(tc.path(leaves[i % len(leaves)]) / "cgroup.procs") for i in range(n)]
    procs_file = tc.path(home or tc.parent) / "cgroup.procs"
    if cc is not None:
        src, exe = work / "forker.c", work / "forker"
        if not exe.exists():
            src.write_text(FORKER_C)
            # static when libc.a is there: ~50 KiB less per sleeper (page tables, the
            # dynamic loader's dirty pages), which the v2 guest's 1 GiB needs
            static = [cc, "-O2", "-static", "-o", str(exe), str(src)]
            built = subprocess.run(static, stderr=subprocess.DEVNULL, check=False)
            if built.returncode != 0:
                subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
        p = subprocess.Popen(
            ["/bin/sh", "-c", f'echo $$ > "{procs_file}" && exec "$0"', str(exe)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        tc.procs.append(p)
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(("\n".join(paths) + "\n").encode())
        p.stdin.close()
        assert p.stdout.readline() == b"ready\n"
    else:  # ~130 KiB each: fewer fit
        for path in paths[: min(n, 1000)]:
            q = subprocess.Popen(
                ["/bin/sh", "-c", f'echo $$ > "{path}" && exec busybox sleep 100000'],
            )
            tc.procs.append(q)
    time.sleep(1.0)
    return sum(len(tc.pids(cg)) for cg in leaves)
