"""Small, fast file primitives shared by the kernel-file code.

``os.open``/``os.read`` instead of ``open()``: no text layer and no buffering object,
which matters when a host-wide command reads two files for each of thousands of pids.
Writes go through ``os.write`` so that the kernel's error (EINVAL, EACCES, EBUSY) reaches
the caller instead of vanishing in a buffered close.
"""

from __future__ import annotations

import os

_CHUNK = 65536


def read_bytes(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, _CHUNK)
        if len(data) < _CHUNK:
            return data
        parts = [data]
        while True:
            more = os.read(fd, _CHUNK)
            if not more:
                return b"".join(parts)
            parts.append(more)
    finally:
        os.close(fd)


def pread_bytes(fd: int) -> bytes:
    """The whole content of an open file, read from its start (a cgroup or proc file:
    each read from offset 0 shows the value now)."""
    data = os.pread(fd, _CHUNK, 0)
    if len(data) < _CHUNK:
        return data
    parts = [data]
    while True:
        more = os.pread(fd, _CHUNK, sum(map(len, parts)))
        if not more:
            return b"".join(parts)
        parts.append(more)


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8", "replace")


def write_text(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def parse_flat_keyed(text: str) -> dict[str, int]:
    """Parse ``key value`` lines (memory.events, memory.oom_control, vmstat)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key and value.lstrip("-").isdigit():
            out[key] = int(value)
    return out
