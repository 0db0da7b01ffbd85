"""Real-kernel test support: one test-run parent cgroup at the hierarchy root, child
memcgs with a limit set before anything allocates, processes we start ourselves, and
unconditional cleanup.

Safety: we create cgroups only below ``memcgctl-test-<pid>-<hex>``,
signal only pids we started (by pid), and never touch anything else in the hierarchy.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")

HELPERS = Path(__file__).parent / "helpers"
PREFIX = "memcgctl-test-"
MAX_TEST_LIMIT = 256 << 20


def v1_memory_mount() -> Path | None:
    """The v1 memory mount, or the cgroup2 mount with memory (inside the test VM)."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    v1 = None
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        if len(rf) < 3:
            continue
        if rf[0] == "cgroup2":
            ctl = Path(lf[4]) / "cgroup.controllers"
            if ctl.exists() and "memory" in ctl.read_text().split():
                return Path(lf[4])
        if rf[0] == "cgroup" and "memory" in rf[2].split(","):
            v1 = Path(lf[4])
    return v1


def unified_mount() -> Path | None:
    """A cgroup2 mount (memory controller or not), for kill-all/freeze tests."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            return Path(left.split()[4])
    return None


def wait_until(cond: Callable[[], T | None], what: str, timeout: float = 20.0) -> T:
    """Poll ``cond`` until it returns something truthy and return that; fail naming
    ``what`` after ``timeout`` seconds.  Kernel tests wait on the condition they need
    (a pid in cgroup.procs, a counter value, a file the follower holds open) with this,
    never with a fixed sleep."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def journaled(state: Path, kind: str, pid: int, timeout: float = 15.0) -> dict[str, Any]:
    """The journal record of ``kind`` for ``pid``, once it is there.  The daemon journals
    from a thread of its own (a held journal lock must never delay a kill), so a record
    may land after the log line that announced the kill: wait for it, never read once."""

    def find() -> dict[str, Any] | None:
        path = state / "journal.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        for line in lines:
            rec = json.loads(line)
            if rec.get("kind") == kind and rec.get("pid") == pid:
                return cast(dict[str, Any], rec)
        return None

    return wait_until(find, f"a {kind} record for pid {pid} in {state}/journal.jsonl", timeout)


def open_files(pid: int) -> list[str]:
    """The paths process ``pid`` holds open (its /proc/PID/fd links)."""
    out: list[str] = []
    fd_dir = Path(f"/proc/{pid}/fd")
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                out.append(os.readlink(fd))
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TestCgroups:
    """Cgroups and processes of one test run on one hierarchy."""

    __test__ = False  # not a pytest test class

    def __init__(self, mount: Path, name: str | None = None) -> None:
        """``name``: reuse another TestCgroups' name, to mirror its test parent on a
        second hierarchy (e.g. the v1 freezer); it must be one of ours."""
        self.mount = mount
        self.version = 2 if (mount / "cgroup.controllers").exists() else 1
        if name is not None:
            assert name.startswith(f"{PREFIX}{os.getpid()}-"), "only our own test names"
        self.name = name or f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.parent = f"/{self.name}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dirs: list[Path] = []
        self._mkdir(self.parent)
        if self.has_memory:
            self.set_limit(self.parent, MAX_TEST_LIMIT)

    @property
    def has_memory(self) -> bool:
        if self.version == 1:
            return (self.mount / "memory.limit_in_bytes").exists()
        ctl = self.mount / "cgroup.controllers"
        return "memory" in ctl.read_text().split()

    def path(self, cg: str) -> Path:
        return self.mount / cg.lstrip("/")

    def _mkdir(self, cg: str) -> Path:
        d = self.path(cg)
        d.mkdir()
        self.dirs.append(d)
        if self.version == 2:
            # let children use the memory/pids controllers (when the root delegates them)
            parent = d.parent
            avail = (parent / "cgroup.controllers").read_text().split()
            for ctl in ("memory", "pids"):
                if ctl in avail:
                    with contextlib.suppress(OSError):
                        self.write(parent, "cgroup.subtree_control", f"+{ctl}")
        return d

    @staticmethod
    def write(d: Path, name: str, value: str) -> None:
        fd = os.open(d / name, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def set_limit(self, cg: str, limit: int) -> None:
        assert limit <= MAX_TEST_LIMIT, "test limits stay small"
        d = self.path(cg)
        if self.version == 1:
            self.write(d, "memory.limit_in_bytes", str(limit))
        else:
            self.write(d, "memory.max", str(limit))
            with contextlib.suppress(OSError):
                self.write(d, "memory.swap.max", "0")

    def make(self, rel: str, limit: int | None = MAX_TEST_LIMIT) -> str:
        """Create ``<parent>/<rel>`` (parents first), limit set before any process."""
        cg = self.parent
        for part in rel.strip("/").split("/"):
            cg = f"{cg}/{part}"
            if not self.path(cg).exists():
                self._mkdir(cg)
                if self.has_memory and limit is not None:
                    self.set_limit(cg, limit)
        return cg

    def spawn(self, cg: str, argv: list[str], ready: bool = True) -> subprocess.Popen[bytes]:
        """Start argv inside cg: the shell joins the cgroup, then execs (so the
        process is in the memcg before it allocates anything)."""
        procs_file = self.path(cg) / "cgroup.procs"
        p = subprocess.Popen(
            ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs_file), *argv],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        self.procs.append(p)
        if ready:
            assert p.stdout is not None
            line = p.stdout.readline()
            assert line == b"ready\n", f"helper did not start: {line!r}"
        return p

    def hog(self, cg: str, mib: int = 0, adj: int | None = None) -> subprocess.Popen[bytes]:
        argv = [sys.executable, str(HELPERS / "hog.py"), str(mib)]
        if adj is not None:
            argv += ["--adj", str(adj)]
        return self.spawn(cg, argv)

    def sleeper(self, cg: str) -> subprocess.Popen[bytes]:
        return self.spawn(cg, ["/bin/sh", "-c", "echo ready; exec sleep 3600"])

    def pids(self, cg: str) -> list[int]:
        return [int(x) for x in (self.path(cg) / "cgroup.procs").read_text().split()]

    def subtree_pids(self, cg: str) -> list[int]:
        out: list[int] = []
        for d in sorted(subdirs(self.path(cg))):
            out += [int(x) for x in (d / "cgroup.procs").read_text().split()]
        return self.pids(cg) + out

    def cleanup(self) -> None:
        """Kill what we started (by pid, only inside our cgroups), then rmdir all."""
        for p in self.procs:
            with contextlib.suppress(OSError):
                p.kill()
        remove_tree(self.path(self.parent))
        for p in self.procs:
            with contextlib.suppress(Exception):
                p.wait(timeout=5)
            if p.stdout:
                p.stdout.close()


def subdirs(top: Path) -> list[Path]:
    """Every directory below ``top`` (not ``top``), parents first.  Iterative: a test
    may nest cgroups deeper than Python's recursion limit, which ``Path.rglob`` (3.11)
    and ``os.walk`` (before 3.12) hit."""
    out: list[Path] = []
    stack = [top]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                kids = [Path(e.path) for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        out += kids
        stack += kids
    return out


def remove_tree(top: Path) -> None:
    """Kill every task in our own test subtree ``top`` and remove its directories."""
    if not top.exists() or not top.name.startswith(PREFIX):
        return
    freezer_thaw(top)
    _remove_by_fd(top, time.monotonic() + 10)
    deadline = time.monotonic() + 10
    while top.exists() and time.monotonic() < deadline:
        dirs = sorted(subdirs(top), key=lambda d: -len(d.parts))
        dirs.append(top)
        busy = False
        for d in dirs:
            with contextlib.suppress(OSError):
                if (d / "cgroup.freeze").exists():
                    TestCgroups.write(d, "cgroup.freeze", "0")
            with contextlib.suppress(OSError):
                if (d / "memory.oom_control").exists() and d != top.parent:
                    TestCgroups.write(d, "memory.oom_control", "0")
            try:
                pids = [int(x) for x in (d / "cgroup.procs").read_text().split()]
            except OSError:
                pids = []
            for pid in pids:
                busy = True
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if not pids:
                with contextlib.suppress(OSError):
                    d.rmdir()
        if not top.exists():
            return
        time.sleep(0.05 if busy else 0.02)


def _fd_write(dfd: int, name: str, value: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(name, os.O_WRONLY, dir_fd=dfd)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)


def _fd_pids(dfd: int) -> list[int]:
    try:
        fd = os.open("cgroup.procs", os.O_RDONLY, dir_fd=dfd)
    except OSError:
        return []
    try:
        return [int(x) for x in os.read(fd, 1 << 20).split()]
    finally:
        os.close(fd)


def _remove_by_fd(top: Path, deadline: float) -> None:
    """Depth-first removal through directory fds (``openat``/``unlinkat``), one fd held
    at a time: trees of any depth, and paths longer than PATH_MAX that a test user made.
    Each directory's tasks are killed (ours: only below our test parent) before it goes."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        fd = os.open(top, flags)
    except OSError:
        return
    names: list[str] = []  # the path from top down to fd
    try:
        while time.monotonic() < deadline:
            with os.scandir(fd) as it:
                kids = [e.name for e in it if e.is_dir(follow_symlinks=False)]
            if kids:
                nfd = os.open(kids[0], flags | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd, names = nfd, [*names, kids[0]]
                continue
            _fd_write(fd, "cgroup.freeze", "0")
            _fd_write(fd, "memory.oom_control", "0")
            pids = _fd_pids(fd)
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            if pids:
                time.sleep(0.02)
                continue
            if not names:
                return  # top itself: the caller's loop removes it
            up = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = up
            with contextlib.suppress(OSError):
                os.rmdir(names[-1], dir_fd=fd)
            names = names[:-1]
    finally:
        os.close(fd)


def freezer_thaw(top: Path) -> None:
    """Thaw our own test cgroups in the v1 freezer hierarchy, if a test froze them."""
    freezer = Path("/sys/fs/cgroup/freezer") / top.name
    if freezer.exists():
        for d in [freezer, *subdirs(freezer)]:
            if (d / "freezer.state").exists():
                with contextlib.suppress(OSError):
                    TestCgroups.write(d, "freezer.state", "THAWED")


def remove_stale(mount: Path) -> None:
    """Remove test parents left by earlier runs whose creator process is gone."""
    for d in mount.glob(PREFIX + "*"):
        try:
            creator = int(d.name[len(PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if not _pid_alive(creator):
            # best effort: a tree too deep for a path (ENAMETOOLONG) must not fail
            # every later test; its own test removes it
            with contextlib.suppress(OSError):
                remove_tree(d)


@functools.cache
def readable_helpers() -> Path:
    """:data:`HELPERS` copied to a world-readable directory, for the scripts a test runs
    as another user (nobody): the checkout may sit in a directory only root can traverse
    (CI's clone under a ``mktemp -d``, 0700).  Made once per session, removed at exit;
    run them with an interpreter outside the checkout (``/usr/bin/python3``)."""
    d = Path(tempfile.mkdtemp(prefix="memcgctl-helpers-"))
    atexit.register(shutil.rmtree, d, True)
    for f in HELPERS.glob("*.py"):
        shutil.copyfile(f, d / f.name)
        os.chmod(d / f.name, 0o644)
    os.chmod(d, 0o755)  # mkdtemp's 0700 lets nobody in only once the copies are there
    return d


def import_everything() -> None:
    """Import every memcgctl module (and what commands import lazily), while still
    root: a child that then drops to nobody may not be able to read the code (a clone
    under a ``mktemp -d``, 0700; a venv inside it; an interpreter under /root)."""
    import importlib
    import pkgutil

    import memcgctl

    for mod in pkgutil.walk_packages(memcgctl.__path__, "memcgctl."):
        importlib.import_module(mod.name)
    for name in ("rich.console", "rich.table", "rich.tree", "tabulate"):
        importlib.import_module(name)


def as_uid(uid: int, fn: Callable[[], object]) -> object:
    """Run ``fn`` in a forked child with real/effective uid and gid ``uid``; return its
    (JSON-serialisable) result.  Used to test delegation and permission errors.  The
    code is imported first (:func:`import_everything`): the child may not read it."""
    import_everything()
    rfd, wfd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        status = 0
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            os.write(wfd, json.dumps({"ok": fn()}).encode())
        except BaseException as exc:
            os.write(wfd, json.dumps({"error": repr(exc)}).encode())
            status = 1
        finally:
            os._exit(status)
    os.close(wfd)
    with os.fdopen(rfd) as f:
        data = f.read()
    os.waitpid(child, 0)
    doc = json.loads(data)
    if "error" in doc:
        raise AssertionError(f"child as uid {uid} failed: {doc['error']}")
    return doc["ok"]
