"""``tree`` and ``ps`` fit the terminal the way ``ps`` and ``systemd-cgls`` do: on a pty
of 80 columns no cgroup name or number is cut (low-value columns go first), at 200
columns every column shows, and ``--wide`` or a pipe prints everything."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from memcgctl.render.output import Column, fit_columns, table_width
from tests.fakehost import FakeHost

LONG = "nc-trial-1223-a-rather-long-job-name"


@pytest.fixture
def host(fake_v1: FakeHost) -> FakeHost:
    fake_v1.cgroup("/batch", limit=512 << 20, usage=100 << 20, badness=100)
    fake_v1.cgroup(f"/batch/{LONG}", limit=256 << 20, usage=123_456_789, delay_ms=2000)
    fake_v1.process(1, "/", comm="init", rss_anon_kb=100)
    fake_v1.process(4242, f"/batch/{LONG}", comm="worker", rss_anon_kb=987_654, oom_score=777)
    return fake_v1


def on_pty(host: FakeHost, cols: int, *args: str) -> str:
    """Run memcgctl with stdout on a pty of ``cols`` columns; its output."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, cols, 0, 0))
    env = {**os.environ, **host.cli_env(), "TERM": "xterm", "NO_COLOR": "1"}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "memcgctl", *args],
        stdin=slave,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], 10)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(10) == 0, proc.stderr.read() if proc.stderr else ""
    text = b"".join(chunks).decode()
    # NO_COLOR leaves bold headers: drop the escape sequences, keep the text
    return re.sub(r"\x1b\[[0-9;]*m", "", text).replace("\r\n", "\n")


def test_tree_at_80_columns_keeps_names_and_numbers(host: FakeHost) -> None:
    text = on_pty(host, 80, "tree")
    lines = text.splitlines()
    assert all(len(line) <= 80 for line in lines), text
    assert "…" not in text
    assert LONG in text
    for number in ("117.7M", "256.0M", "512.0M", "100.0M"):
        assert number in text, text
    header = lines[0].split()
    assert header[:3] == ["CGROUP", "USAGE", "LIMIT"]
    assert "TASKS" in header


def test_tree_at_200_columns_shows_every_column(host: FakeHost) -> None:
    text = on_pty(host, 200, "tree")
    header = text.splitlines()[0].split()
    assert header == [
        "CGROUP",
        "USAGE",
        "LIMIT",
        "BADNESS",
        "DELAY",
        "OOM.GROUP",
        "UNDER_OOM",
        "KILLS",
        "TASKS",
    ]
    assert "100 (trusted)" in text and "2s" in text


def test_ps_at_80_columns_keeps_cgroup_and_numbers(host: FakeHost) -> None:
    text = on_pty(host, 80, "ps")
    assert "…" not in text
    assert f"/batch/{LONG}" in text
    assert "4242" in text and "964.5M" in text
    lines = text.splitlines()
    assert lines[0].split()[0] == "PID" and lines[0].split()[-1] == "CGROUP"
    assert len(lines) == 3, text  # header + two processes: nothing wrapped onto extra lines


def test_ps_at_200_columns_and_wide(host: FakeHost) -> None:
    wide = on_pty(host, 200, "ps")
    assert wide.splitlines()[0].split() == [
        "PID",
        "COMM",
        "RSS",
        "SWAP",
        "BADNESS",
        "OOM_ADJ",
        "OOM_SCORE",
        "CGROUP",
    ]
    narrow_wide = on_pty(host, 80, "ps", "--wide")
    assert narrow_wide.splitlines()[0].split() == wide.splitlines()[0].split()
    assert "…" not in narrow_wide


def test_piped_output_has_every_column(host: FakeHost) -> None:
    env = {**os.environ, **host.cli_env(), "COLUMNS": "40"}
    r = subprocess.run(
        [sys.executable, "-m", "memcgctl", "tree"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr
    assert "OOM.GROUP" in r.stdout and LONG in r.stdout


def test_fit_columns_drops_low_value_columns_first() -> None:
    cols = [
        Column("NAME", ["x" * 30]),
        Column("A", ["1"], priority=1, short="a"),
        Column("BBBBBBBBBB", ["2"], priority=3, short="B"),
        Column("CCCCCCCCCC", ["3"], priority=2),
    ]
    assert fit_columns(cols, None) == cols
    assert [c.header for c in fit_columns(cols, 200)] == ["NAME", "A", "BBBBBBBBBB", "CCCCCCCCCC"]
    fitted = fit_columns(cols, 45)
    assert [c.header for c in fitted] == ["NAME", "a", "CCCCCCCCCC"]
    assert table_width(fitted) <= 45
    assert [c.header for c in fit_columns(cols, 40)] == ["NAME", "a"]
    # only never-dropped columns left: the line overflows rather than cutting the name
    assert [c.header for c in fit_columns(cols, 10)] == ["NAME"]
