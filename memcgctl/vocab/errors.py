"""Our exception types: plain exceptions, no UI (psutil's ``_exceptions.py`` is the model).

Every error carries an exit status (docs/commands.md, "Exit codes") and what it is about — the
cgroup, pid, file and errno where known — as attributes, and its one-line message as
``str(exc)``.
Commands and readers raise these; :func:`from_oserror` turns a stray ``OSError`` into
one.  Only :mod:`memcgctl.cli` turns them into a stderr line and an exit code.
"""

from __future__ import annotations

import errno
from enum import IntEnum

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import ClassVar


class ExitStatus(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    PERMISSION = 4
    NOT_SUPPORTED = 5
    # `memcgctl run` only, as env(1), nice(1), chroot(1) and the shells (POSIX "Utility
    # Syntax"): CMD found but not executable, CMD not found.
    CANNOT_EXECUTE = 126
    COMMAND_NOT_FOUND = 127


class MemcgctlError(Exception):
    """Base class: a one-line message naming what is involved, and an exit status."""

    status: ClassVar[ExitStatus] = ExitStatus.FAILED

    def __init__(
        self,
        message: str,
        *,
        cgroup: str | None = None,
        pid: int | None = None,
        path: str | None = None,
        errno: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.cgroup = cgroup
        self.pid = pid
        self.path = path
        self.errno = errno

    def __str__(self) -> str:
        return self.message


class OperationFailed(MemcgctlError):
    status = ExitStatus.FAILED


class LockTimeout(OperationFailed):
    """A state-directory lock stayed held longer than we wait (never forever)."""


class OwnedElsewhere(OperationFailed):
    """A knob is held by another running daemon."""


class NoSuchFile(OperationFailed):
    """A file or directory we need that is not a cgroup (``/proc/self/mountinfo``, a
    state file, a device) is missing: the operation failed (exit 1), not "no such
    cgroup" (exit 3)."""

    def __init__(
        self,
        path: str,
        detail: str = "no such file or directory",
        *,
        name: str | None = None,
        errno: int | None = None,
    ) -> None:
        """``name``: what the message names when not the path."""
        super().__init__(f"{name or path}: {detail}", path=path, errno=errno)


class UsageProblem(MemcgctlError):
    status = ExitStatus.USAGE


class NoSuchCgroup(MemcgctlError):
    status = ExitStatus.NOT_FOUND

    def __init__(
        self,
        cgroup: str,
        detail: str = "no such cgroup",
        *,
        name: str | None = None,
        path: str | None = None,
        errno: int | None = None,
    ) -> None:
        """``name``: what the message names when not the cgroup (its directory)."""
        super().__init__(f"{name or cgroup}: {detail}", cgroup=cgroup, path=path, errno=errno)


class NoSuchProcess(MemcgctlError):
    status = ExitStatus.NOT_FOUND

    def __init__(
        self,
        pid: int | None,
        detail: str = "no such process",
        *,
        name: str | None = None,
        errno: int | None = None,
    ) -> None:
        """``name``: what the message names when not ``pid N`` (e.g. a syscall)."""
        super().__init__(f"{name or f'pid {pid}'}: {detail}", pid=pid, errno=errno)


class PermissionDenied(MemcgctlError):
    status = ExitStatus.PERMISSION


class NotSupported(MemcgctlError):
    status = ExitStatus.NOT_SUPPORTED


class CommandNotRunnable(MemcgctlError):
    """``run``: CMD cannot be started (126 not executable, 127 not found)."""

    status = ExitStatus.CANNOT_EXECUTE


class CommandNotFound(CommandNotRunnable):
    status = ExitStatus.COMMAND_NOT_FOUND


class CommandNotExecutable(CommandNotRunnable):
    status = ExitStatus.CANNOT_EXECUTE


class OverBudget(Exception):
    """Not an error: a bounded read (a lazy snapshot given a budget of cgroups to look
    at) reached its bound.  The daemon's refresh of a standing plan stops there and
    keeps no plan (issue 22: a tenant's thousands of cgroups never hold its loop)."""


class Vanished(Exception):
    """A cgroup or process disappeared while we read it.  Readers raise it; callers
    that walk many objects treat it as "absent", never as a failure."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


class Malformed(Exception):
    """A document that is not what we expect (a state file, a pod list).  Not an error
    of its own: the caller warns and goes on, or raises a :class:`MemcgctlError` that
    names the source."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


VANISHED_ERRNOS = frozenset({errno.ENOENT, errno.ESRCH, errno.ENODEV})


def from_oserror(
    exc: OSError, what: str | None = None, *, cgroup: str | None = None, pid: int | None = None
) -> MemcgctlError:
    """Map an OSError to our error with the right exit status.

    ``what`` is what the message names (default: the file); ``cgroup``/``pid`` say what
    the operation was about, so that a missing file is told apart from a missing
    cgroup (exit 3) or process (exit 3): a file that is neither is exit 1.
    """
    path = str(exc.filename) if exc.filename is not None else None
    name = what or path or (f"pid {pid}" if pid is not None else cgroup) or "operation"
    reason = exc.strerror or str(exc)
    code = exc.errno
    if code in VANISHED_ERRNOS:
        if pid is not None or code == errno.ESRCH:
            return NoSuchProcess(pid, reason.lower(), name=name, errno=code)
        if cgroup is not None:
            return NoSuchCgroup(cgroup, reason.lower(), name=name, path=path, errno=code)
        return NoSuchFile(path or name, reason.lower(), name=name, errno=code)
    cls: type[MemcgctlError] = OperationFailed
    message = f"{name}: {reason}"
    if code in (errno.EACCES, errno.EPERM):
        cls, message = PermissionDenied, f"{name}: permission denied ({reason})"
    elif code in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS):
        cls, message = NotSupported, f"{name}: not supported here ({reason})"
    return cls(message, cgroup=cgroup, pid=pid, path=path, errno=code)
