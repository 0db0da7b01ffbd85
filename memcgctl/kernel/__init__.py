"""Kernel files, read and written: cgroupfs, /proc, OOM notifications, /dev/kmsg, and
the immutable snapshot filled from them.  The only code that opens kernel files."""
