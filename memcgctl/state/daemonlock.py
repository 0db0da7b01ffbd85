"""The one-daemon claim, arbitrated by the kernel: flocks on files in the state directory.

The xattr claim (``daemon/owner.py``) is check-then-write: two daemons started at once
(each xattr write delayed) both found no claim and both took the same memcg over.  Here
the kernel decides: a daemon on ``--root R`` holds, for its whole life,

* an exclusive flock on R's lock file, and
* a shared flock on the lock file of every ancestor of R,

all taken without waiting.  Two daemons on the same cgroup, or one on an ancestor of the
other's root, cannot both hold theirs; daemons on disjoint subtrees share only shared
locks.  The locks live in the state directory (root's own: no other user can open them,
so nobody can hold one to keep the daemon from starting) and die with the process, so a
crashed daemon's claim is never stale.  Each lock file is named by a hash of the cgroup
path; the exclusive holder writes its instance id into its file so a refusal names it.
"""

from __future__ import annotations

import fcntl
import importlib
import os
from collections.abc import Callable
from pathlib import Path

from memcgctl.state.statedir import _lock_fd, check_state_dir, lock_holder
from memcgctl.vocab.cgpath import CgroupPath
from memcgctl.vocab.errors import from_oserror

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _sha256() -> Callable[[bytes], Any]:
    """SHA-256 without OpenSSL: ``import hashlib`` loads libcrypto (~3.4 MiB resident,
    which the daemon's mlockall then keeps) to name a few files; the interpreter's own
    module computes the same digest (``_sha2`` since Python 3.12, ``_sha256`` before)."""
    for name in ("_sha2", "_sha256"):
        try:
            return importlib.import_module(name).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    import hashlib  # a Python built without its own SHA-2

    return hashlib.sha256


def lock_path(state_dir: Path, cg: CgroupPath) -> Path:
    digest = _sha256()(str(cg).encode("utf-8", "surrogateescape")).hexdigest()[:20]
    return state_dir / f"daemon-{digest}.lock"


class RootClaim:
    """The flocks of one daemon on its root and the root's ancestors."""

    def __init__(self, state_dir: Path, root: CgroupPath, instance: str) -> None:
        self.state_dir = state_dir
        self.root = root
        self.instance = instance
        self._fds: list[int] = []

    def acquire(self) -> str | None:
        """Take every lock at once, waiting for none: None when claimed, else who holds
        the conflicting one (a pid or an instance id, as far as it can be told)."""
        check_state_dir(self.state_dir, create=True)
        wanted = [(a, fcntl.LOCK_SH) for a in reversed(self.root.ancestors())]
        wanted.append((self.root, fcntl.LOCK_EX))
        for cg, mode in wanted:
            path = lock_path(self.state_dir, cg)
            try:
                fd = _lock_fd(path)
            except OSError as exc:
                self.release()
                raise from_oserror(exc, str(path)) from exc
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                who = _holder(fd, path)
                os.close(fd)
                self.release()
                return f"{who} (a daemon on {cg} or overlapping it)"
            self._fds.append(fd)
            if mode == fcntl.LOCK_EX:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{self.instance}\n{cg}\n".encode(), 0)
        return None

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def _holder(fd: int, path: Path) -> str:
    pid = lock_holder(path)  # /proc/locks: whoever holds it now
    if pid is not None:
        return f"pid {pid}"
    try:  # what the last exclusive holder wrote (it may be gone by now)
        text = os.pread(fd, 512, 0).decode("ascii", "replace").split("\n", 1)[0]
    except OSError:
        text = ""
    return f"pid {text.split('/')[1]}" if text.count("/") == 2 else "another daemon"
