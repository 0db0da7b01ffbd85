"""The names of the cgroup files memcgctl reads and writes, one constant each.

A cgroup file is addressed by its directory's path plus one of these names (for both
cgroup versions, the v1 memory controller, cgroup v2, and the v1 freezer controller);
:class:`~memcgctl.kernel.cgroupfs.CgroupFs` reads and writes them, and callers that
watch or write a file by name use the same constant.  No I/O here.
"""

# Both versions
CGROUP_PROCS = "cgroup.procs"
# cgroup v1 memory controller
V1_USAGE = "memory.usage_in_bytes"
V1_LIMIT = "memory.limit_in_bytes"
V1_MEMSW_LIMIT = "memory.memsw.limit_in_bytes"
V1_OOM_CONTROL = "memory.oom_control"
V1_SWAPPINESS = "memory.swappiness"
V1_EVENT_CONTROL = "cgroup.event_control"
# cgroup v2
V2_CONTROLLERS = "cgroup.controllers"
V2_CURRENT = "memory.current"
V2_MAX = "memory.max"
V2_HIGH = "memory.high"
V2_STAT = "memory.stat"
V2_SWAP_CURRENT = "memory.swap.current"
V2_SWAP_MAX = "memory.swap.max"
V2_EVENTS = "memory.events"
V2_EVENTS_LOCAL = "memory.events.local"
V2_OOM_GROUP = "memory.oom.group"
V2_KILL = "cgroup.kill"
V2_FREEZE = "cgroup.freeze"
V2_CGROUP_EVENTS = "cgroup.events"
V2_SUBTREE_CONTROL = "cgroup.subtree_control"
# cgroup v1 freezer controller
V1_FREEZER_STATE = "freezer.state"
