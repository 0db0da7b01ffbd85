"""Our exception types and the one place that maps them to exit codes (0 ok, 1 failed
or found nothing, 2 usage, 3 no such cgroup or process, 4 permission, 5 unsupported).

Every error carries the cgroup, pid or file it is about, and prints as one line on
stderr.  Commands raise these; :func:`from_oserror` turns a stray ``OSError`` into one.
"""

from __future__ import annotations

import errno
import sys
from enum import IntEnum
from typing import IO

import click


class ExitStatus(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    PERMISSION = 4
    NOT_SUPPORTED = 5


class MemcgctlError(click.ClickException):
    """Base class: a message naming what is involved, and an exit status."""

    status: ExitStatus = ExitStatus.FAILED
    # click >= 8.5 types ClickException.exit_code as a ClassVar: set per class, never on
    # an instance (each subclass that names a status gets the matching exit code).
    exit_code = int(ExitStatus.FAILED)

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if "status" in cls.__dict__:
            cls.exit_code = int(cls.status)

    def __init__(self, message: str) -> None:
        super().__init__(message)

    def show(self, file: IO[str] | None = None) -> None:
        stream = file if file is not None else sys.stderr
        from memcgctl.safetext import printable

        click.echo(printable(f"memcgctl: {self.format_message()}"), file=stream)


class OperationFailed(MemcgctlError):
    status = ExitStatus.FAILED


class LockTimeout(OperationFailed):
    """A state-directory lock stayed held longer than we wait (never forever)."""


class UsageProblem(MemcgctlError):
    status = ExitStatus.USAGE


class NoSuchCgroup(MemcgctlError):
    status = ExitStatus.NOT_FOUND

    def __init__(self, cgroup: str, detail: str = "no such cgroup") -> None:
        self.cgroup = cgroup
        super().__init__(f"{cgroup}: {detail}")


class NoSuchProcess(MemcgctlError):
    status = ExitStatus.NOT_FOUND

    def __init__(self, pid: int, detail: str = "no such process") -> None:
        self.pid = pid
        super().__init__(f"pid {pid}: {detail}")


class PermissionDenied(MemcgctlError):
    status = ExitStatus.PERMISSION


class NotSupported(MemcgctlError):
    status = ExitStatus.NOT_SUPPORTED


class Vanished(Exception):
    """A cgroup or process disappeared while we read it.  Readers raise it; callers
    that walk many objects treat it as "absent", never as a failure."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


VANISHED_ERRNOS = frozenset({errno.ENOENT, errno.ESRCH, errno.ENODEV})


def from_oserror(exc: OSError, what: str | None = None) -> MemcgctlError:
    """Map an OSError to our error with the right exit status."""
    name = what or exc.filename or "operation"
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionDenied(f"{name}: permission denied ({reason})")
    if exc.errno in VANISHED_ERRNOS:
        return NoSuchCgroup(str(name), reason.lower())
    if exc.errno in (errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS):
        return NotSupported(f"{name}: not supported here ({reason})")
    return OperationFailed(f"{name}: {reason}")
