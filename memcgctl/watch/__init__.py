"""``events --follow``: the one ``poll()`` loop over the kernel log, cgroup notifications
and the journal."""
