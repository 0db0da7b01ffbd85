"""An OOM trigger: allocate CHUNK_KIB at a time until killed (or LIMIT_MIB reached).

Usage: grow.py [CHUNK_KIB [LIMIT_MIB [PAUSE_S]]]   PAUSE_S between chunks (default
0.001; 0 = as fast as the machine allows).  Says "ready" before the first chunk and
"survived" if it reached LIMIT_MIB.
"""

import sys
import time

chunk = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
limit_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 512
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.001
keep = []
sys.stdout.write("ready\n")
sys.stdout.flush()
total = 0
while total < limit_mib << 10:
    keep.append(b"\x01" * (chunk << 10))
    total += chunk
    if pause:
        time.sleep(pause)
sys.stdout.write("survived\n")
sys.stdout.flush()
time.sleep(3600)
