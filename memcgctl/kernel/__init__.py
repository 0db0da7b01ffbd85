"""Kernel files, read and written: the cgroup hierarchy (cgroupfs), /proc (procfs), OOM
notifications (notify), /dev/kmsg (kmsgdev), and whether a cgroup was under OOM
(oomstate).  The only code that opens kernel files."""
