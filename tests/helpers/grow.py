"""An OOM trigger: allocate CHUNK_KIB at a time until killed (or LIMIT_MIB reached)."""

import sys
import time

chunk = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
limit_mib = int(sys.argv[2]) if len(sys.argv) > 2 else 512
keep = []
sys.stdout.write("ready\n")
sys.stdout.flush()
total = 0
while total < limit_mib << 10:
    keep.append(b"\x01" * (chunk << 10))
    total += chunk
    time.sleep(0.001)
sys.stdout.write("survived\n")
sys.stdout.flush()
time.sleep(3600)
