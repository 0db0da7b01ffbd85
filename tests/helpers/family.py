"""A parent that forks workers when told: the test sets the parent's badness first.

Says "ready"; on each stdin line "fork MIB GROW_TO_MIB" forks a worker that allocates
MIB, then grows 1 MiB at a time up to GROW_TO_MIB, says "worker PID grown" and sleeps.
"""

import os
import sys
import time

sys.stdout.write("ready\n")
sys.stdout.flush()
for line in sys.stdin:
    mib, grow_to = (int(x) for x in line.split()[1:3])
    pid = os.fork()
    if pid == 0:
        keep = [b"\x01" * (mib << 20)]
        total = mib
        while total < grow_to:
            keep.append(b"\x01" * (1 << 20))
            total += 1
            time.sleep(0.002)
        sys.stdout.write(f"worker {os.getpid()} grown\n")
        sys.stdout.flush()
        while True:
            time.sleep(3600)
while True:
    time.sleep(3600)
