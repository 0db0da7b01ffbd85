"""Watching the kernel's OOM events: the ``events --follow`` loop (follower), the kernel
log's history journaled (history), and the kill counters built from both (tally)."""
