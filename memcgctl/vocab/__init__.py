"""The words every layer uses: cgroup paths, the snapshot's types, event records, policy
reasons, errors, units.  No I/O, no UI; imports nothing else of memcgctl."""
