"""A test process: optionally allocate and touch N MiB, say "ready", then sleep.

Usage: hog.py MIB [--adj N]   (--adj raises oom_score_adj before allocating)
"""

import os
import sys
import time

mib = int(sys.argv[1]) if len(sys.argv) > 1 else 0
if "--adj" in sys.argv:
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
    os.write(fd, sys.argv[sys.argv.index("--adj") + 1].encode())
    os.close(fd)
block = b"\x01" * (mib << 20)  # memset touches every page
sys.stdout.write("ready\n")
sys.stdout.flush()
while True:
    time.sleep(3600)
