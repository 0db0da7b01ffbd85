"""The userspace OOM handler: a pure ``tick``-driven core, real ports, a loop."""
