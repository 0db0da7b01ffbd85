"""Pure functions, no I/O: victim selection, kill counters, kernel-log and OOM-report
parsing, post-mortem reconstruction, pods to badness, event filtering and merging."""
