"""``memcgctl top`` (issue 24): on a real terminal (a pty) with a real OOM happening
underneath — the next victim shown before it dies, the policy switched with a key, the
kill appearing after — and in batch mode (--iterations) when not a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tests.realkernel import HELPERS, TestCgroups

# the helpers' comm: execve's file name, as the kernel keeps it (python or python3)
COMM = Path(sys.executable).name[:15]

pytestmark = pytest.mark.kernel
ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


class Screen:
    """memcgctl top on a pty; everything it wrote, escape sequences removed."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 200, 0, 0))
        full = {**os.environ, **env, "TERM": "xterm", "NO_COLOR": "1"}
        full.pop("COLUMNS", None)
        full.pop("LINES", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memcgctl", *argv],
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=full,
            cwd=ROOT,
            start_new_session=True,
        )
        os.close(slave)
        self.text = ""

    def read(self, timeout: float = 0.2) -> None:
        while select.select([self.master], [], [], timeout)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.text += ANSI.sub(b"", data).decode(errors="replace")
            timeout = 0.01

    def wait_for(self, pattern: str, timeout: float = 30) -> int:
        """The offset in the output where ``pattern`` (a regex) first appears."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.text)
            if m:
                return m.start()
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} never shown; screen:\n{self.text[-3000:]}")
            self.read()

    def key(self, k: str) -> None:
        os.write(self.master, k.encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=10)
        finally:
            os.close(self.master)


def test_top_on_a_terminal_with_a_real_oom(cgroups: TestCgroups, tmp_path: Path) -> None:
    dom = cgroups.make("dom", limit=48 << 20)
    low = cgroups.make("dom/low", limit=None)
    high = cgroups.make("dom/high", limit=None)
    os.setxattr(cgroups.path(low), "trusted.memcgctl.badness", b"10")
    small = cgroups.hog(low, mib=1)
    screen = Screen(["top", cgroups.parent, "-d", "200ms"], {"MEMCGCTL_STATE_DIR": str(tmp_path)})
    try:
        # the priority policy's next victim in /dom: the badness-10 process
        screen.wait_for(rf"{re.escape(dom)} \(limit 48\.0M\): pid {small.pid} \({COMM}\)")
        screen.wait_for(r"policy priority")
        g = cgroups.spawn(high, [sys.executable, str(HELPERS / "grow.py"), "1024", "200", "0.05"])
        screen.key("p")  # the kernel's heuristic: the biggest, the grower once it grew
        shown = screen.wait_for(
            rf"policy kernel(.|\n)*?{re.escape(dom)} \(limit 48\.0M\): pid {g.pid} \({COMM}\)"
        )
        assert g.wait(timeout=60) == -signal.SIGKILL  # the kernel's OOM kill
        killed = screen.wait_for(rf"oom_kill  pid {g.pid} \({COMM}\) in {re.escape(high)}")
        assert shown < killed  # named as the next victim before the kill was shown
        assert small.poll() is None
        screen.key("s")
        screen.wait_for(r"sort usage")
        screen.key("q")
        assert screen.close() == 0
    finally:
        if screen.proc.poll() is None:
            screen.proc.kill()
            screen.proc.wait(timeout=10)


def test_top_batch_mode(cgroups: TestCgroups, tmp_path: Path) -> None:
    job = cgroups.make("job", limit=32 << 20)
    p = cgroups.hog(job, mib=4)
    r = subprocess.run(
        [sys.executable, "-m", "memcgctl", "top", cgroups.parent, "-n", "2", "-d", "100ms"],
        cwd=ROOT,
        env={**os.environ, "MEMCGCTL_STATE_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("memcgctl top — ") == 2
    assert "\x1b" not in r.stdout
    row = next(ln for ln in r.stdout.splitlines() if ln.strip().startswith("job "))
    assert "32.0M" in row and "[" in row
    assert f"pid {p.pid} ({COMM})" in r.stdout
