"""Examples for every command: the epilog of its ``--help`` and its man page section
(tools/gen_man.py reads the same epilog), so the two never disagree.

Each example is ``(command line, what it does)``; tests/test_newcomer.py parses every
command line with the real option parser.
"""

from __future__ import annotations

EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "tree": (
        ("memcgctl tree", "the whole hierarchy"),
        ("memcgctl tree /batch -w", "one subtree, every column"),
        ("memcgctl tree /batch -p", "with each cgroup's processes (systemd-cgls)"),
        ("memcgctl tree --pid $$ --json", "the memcg of this shell, for scripts"),
    ),
    "ps": (
        ("memcgctl ps /batch --sort rss", "the processes of /batch, biggest last"),
        ("memcgctl ps --json", "every process with its badness and oom_score"),
    ),
    "set-badness": (
        ("memcgctl set-badness /batch 100", "batch jobs die before the rest"),
        ("memcgctl set-badness /services/postgres 1000", "never kill the database"),
        ("memcgctl set-badness --pid 4242 50", "this process first inside its cgroup"),
        ("memcgctl set-badness /batch default", "back to 500"),
        ("memcgctl set-badness --unit nightly.service 100", "a systemd unit's cgroup"),
    ),
    "get-badness": (
        ("memcgctl get-badness", "every cgroup and every registered process"),
        ("memcgctl get-badness /batch --pid 4242", "one cgroup and one process"),
    ),
    "set-delay": (
        ("memcgctl set-delay /batch 2s", "the job manager has 2 s to react to an OOM"),
        ("memcgctl set-delay /batch 0", "the daemon kills by priority at once"),
        ("memcgctl set-delay /batch off", "unmanaged: the kernel alone decides"),
    ),
    "install-unit": (
        ("memcgctl install-unit --dry-run", "print the daemon's unit for this memcgctl"),
        ("memcgctl install-unit -- --root /batch", "install it for one subtree (as root)"),
        ("memcgctl install-unit --no-reload --unit-dir /img/etc/systemd/system", "an image"),
    ),
    "apply": (
        ("memcgctl apply --dry-run", "what the cgroup rules would write"),
        ("memcgctl apply /batch.slice", "write them below /batch.slice"),
        ("memcgctl apply --rules ./rules.d --json", "another rules directory, for scripts"),
    ),
    "get-delay": (
        ("memcgctl get-delay", "every cgroup's OOM delay"),
        ("memcgctl get-delay /batch --json", "one cgroup, for scripts"),
    ),
    "kill-all": (
        ("memcgctl kill-all /batch/job1", "SIGKILL every task, race-free against forks"),
        ("memcgctl kill-all /batch/job1 --signal TERM --grace 5", "TERM, then KILL after 5 s"),
        ("memcgctl kill-all /batch/job1 --dry-run", "who would be signalled"),
    ),
    "predict-victim": (
        ("memcgctl predict-victim", "who dies if the host runs out of memory"),
        ("memcgctl predict-victim /batch --explain", "the walk, level by level"),
        ("memcgctl predict-victim --policy kernel --top 5", "the kernel's pick and runners-up"),
    ),
    "daemon": (
        ("memcgctl daemon", "enforce the policy on every memcg with an OOM delay"),
        ("memcgctl daemon --root /batch --dry-run", "shadow mode: report, change nothing"),
        ("memcgctl daemon --release --dry-run", "what a stopped daemon left behind"),
        (
            "memcgctl daemon --pre-kill 'logger \"OOM: $MEMCGCTL_VICTIM_PID\"'",
            "run a command before each kill",
        ),
    ),
    "events": (
        ("memcgctl events --since 1h", "OOM events of the last hour"),
        ("memcgctl events /batch --follow", "tail them live"),
        ("journalctl -k | memcgctl events --from -", "from a saved kernel log"),
    ),
    "counters": (
        ("memcgctl counters /batch /batch/job1", "kills by cause"),
        ("memcgctl counters --format prometheus", "for node_exporter's textfile collector"),
    ),
    "run": (
        (
            "memcgctl run --cgroup batch/nightly -m 2G --badness 10 -- ./report.sh",
            "a job in its own memcg, killed first",
        ),
        (
            "memcgctl run -c batch/ci -m 1G --delay 2s -- make -j8",
            "with an OOM delay (the daemon acts)",
        ),
        (
            "memcgctl run -c batch/t1 -m 512M --wait --collect -- ./test.sh",
            "wait, summarise (peak memory, OOM kills), remove",
        ),
        (
            "memcgctl run -c batch/r -m 1G --uid build -E CI=1 -- make",
            "as another user, with CI=1 in its environment",
        ),
    ),
    "explain-kill": (
        ("memcgctl explain-kill", "why the kernel killed what it killed, last OOM"),
        ("memcgctl explain-kill --from kern.log 4242", "one kill, from a saved log"),
    ),
    "status": (
        ("memcgctl status", "what the running daemon manages now"),
        ("memcgctl status --json", "the same, for scripts and monitoring"),
    ),
    "top": (
        ("memcgctl top /batch", "live: usage, valve, OOM state, next victims, kills"),
        ("memcgctl top -n 3 -d 2s --policy kernel", "three plain screens, as top -b"),
    ),
    "set-limit": (
        ("memcgctl set-limit /batch 100M", "shrink: the policy's victim dies, not the kernel's"),
        ("memcgctl set-limit /batch 100M --dry-run --json", "what it would kill, for scripts"),
    ),
    "kube": (
        ("memcgctl kube --once --dry-run", "what pod priorities would set"),
        ("memcgctl kube --interval 30", "keep every pod's badness current"),
    ),
}


WIDTH = 76  # click indents the epilog by two: 78 columns


def epilog(name: str) -> str:
    """The ``Examples:`` block of ``name``'s ``--help`` (click keeps ``\\b`` blocks as
    written)."""
    examples = EXAMPLES[name]
    width = max(len(cmd) for cmd, _ in examples)
    if max(width + len(what) for _, what in examples) + 6 <= WIDTH:
        lines = [f"  {cmd:<{width}}  # {what}" for cmd, what in examples]
    else:  # too wide for 80 columns side by side: what it does above each line
        lines = [line for cmd, what in examples for line in (f"  # {what}", f"  {cmd}")]
    return "Examples:\n\n\b\n" + "\n".join(lines)
