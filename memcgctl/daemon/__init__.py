"""The userspace OOM handler (SPEC §7): a pure ``tick``-driven core, real ports, a loop."""
