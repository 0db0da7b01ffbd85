"""The state directory (default /run/memcgctl): what the registry, the journal and the
kernel-log cursor share, hardened against other users and against corrupt files.

* The directory: created ``0700``; accepted only when owned by the invoker or root and
  writable by nobody else (a group- or world-writable one, or one owned by another user,
  is refused with exit 4: its owner could plant, swap or forge every file in it).
* Its whole path, the way systemd's ``chase()`` resolves one safely: every directory
  from ``/`` down must belong to root or the invoker and be writable by nobody else
  unless sticky (``/tmp``: others cannot rename what is not theirs), and a symlink on
  the way is followed only when root or the invoker owns it (its target checked the same
  way).  Otherwise another user could swap a component and send us elsewhere.
* Files: opened with ``O_NOFOLLOW`` (a symlink is never followed) and checked to be
  regular files; created ``0600`` whatever the umask; replaced atomically through
  ``mkstemp`` file in the same directory (no predictable temporary names).
* Locks: an flock on a ``0600`` file of the invoker's — a lock file that others could
  open (``0644`` from older versions, another owner) is replaced first — taken with a
  timeout, never an unbounded wait (:class:`~memcgctl.vocab.errors.LockTimeout`).
* Corrupt files: :func:`read_bounded` / :func:`loads_bounded` bound size and nesting
  (no ``MemoryError``, no ``RecursionError``) and raise :class:`Corrupt`; callers warn
  once and :func:`set_aside` the file as ``NAME.corrupt-TIME``.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from memcgctl.render.diag import warning
from memcgctl.vocab.errors import (
    LockTimeout,
    Malformed,
    OperationFailed,
    PermissionDenied,
    from_oserror,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# How long a command waits for a lock held by another memcgctl before giving up.
LOCK_TIMEOUT_S = 5.0
FILE_MODE = 0o600
DIR_MODE = 0o700
# JSON documents nest a few levels; anything deeper is not ours.
MAX_JSON_DEPTH = 32

Warn = Callable[[str], None]


class Corrupt(Malformed):
    """A state file that is not what memcgctl writes (garbage, truncated, wrong types,
    too large or too deeply nested, a symlink, not a regular file)."""


def stderr_warning(message: str) -> None:
    """The default warning sink: one line on stderr, never an exception (a kill must
    not wait on, or die of, a closed stderr)."""
    warning(message)


# -- the directory --------------------------------------------------------------------


def _refuse(state_dir: Path, why: str) -> PermissionDenied:
    return PermissionDenied(f"{state_dir}: refusing the state directory: {why}")


def _trusted(st: os.stat_result) -> bool:
    return st.st_uid in (os.geteuid(), 0)


_MAX_SYMLINKS = 40  # as the kernel (ELOOP)


def _others_can_write(st: os.stat_result) -> bool:
    return bool(st.st_mode & 0o022) and not st.st_mode & stat.S_ISVTX


def _check_path(state_dir: Path) -> None:
    """Every component of ``state_dir``'s path, from ``/``, resolved one at a time (no
    symlink followed before it is vetted): a directory on the way belongs to root or
    the invoker and others cannot write it (sticky ones excepted); a symlink belongs to
    root or the invoker.  The state directory itself is vetted by the caller.  Stops
    at the first component that does not exist (what is created then is ours)."""
    where = os.path.abspath(state_dir)
    todo = [c for c in reversed(where.split("/")) if c]
    current = "/"
    links = 0
    try:
        st = os.lstat(current)
    except OSError as exc:
        raise from_oserror(exc, current) from exc
    while True:
        if not todo:
            return  # the state directory itself: the caller's checks
        if not _trusted(st):
            raise _refuse(state_dir, f"{current} belongs to uid {st.st_uid} (not you or root)")
        if _others_can_write(st):
            raise _refuse(
                state_dir,
                f"{current} is writable by other users"
                f" (mode {stat.S_IMODE(st.st_mode):04o}, not sticky)",
            )
        name = todo.pop()
        if name in (".", ".."):
            current = current if name == "." else os.path.dirname(current)
            st = os.lstat(current)
            continue
        step = os.path.join(current, name)
        try:
            st = os.lstat(step)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise from_oserror(exc, step) from exc
        if stat.S_ISLNK(st.st_mode):
            if not _trusted(st):
                raise _refuse(state_dir, f"{step} is a symlink owned by uid {st.st_uid}")
            links += 1
            if links > _MAX_SYMLINKS:
                raise _refuse(state_dir, f"{step}: too many levels of symbolic links")
            try:
                target = os.readlink(step)
            except OSError as exc:
                raise from_oserror(exc, step) from exc
            todo.extend(c for c in reversed(target.split("/")) if c)
            if target.startswith("/"):
                current = "/"
            st = os.lstat(current)
            continue
        if not stat.S_ISDIR(st.st_mode):
            return  # not a directory: the caller says so
        current = step


def _make_parents(state_dir: Path) -> None:
    """The missing directories above ``state_dir``, ``0755`` (not the umask's)."""
    missing: list[Path] = []
    parent = state_dir.parent
    while not parent.exists() and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    for d in reversed(missing):
        with suppress(FileExistsError):
            os.mkdir(d, 0o755)


def check_state_dir(state_dir: Path, create: bool = False) -> bool:
    """Vet the state directory and its whole path (:func:`_check_path`); create it
    ``0700`` when ``create``.

    Returns False when it does not exist (and was not to be created).  Raises
    PermissionDenied (exit 4) for a directory another user could write or swap."""
    _check_path(state_dir)
    created = False
    try:
        st = os.stat(state_dir)
    except FileNotFoundError:
        if not create:
            return False
        created = True
        try:
            _make_parents(state_dir)
            os.mkdir(state_dir, DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise from_oserror(exc, str(state_dir)) from exc
        try:
            st = os.stat(state_dir)
        except OSError as exc:
            raise from_oserror(exc, str(state_dir)) from exc
    except OSError as exc:
        raise from_oserror(exc, str(state_dir)) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise OperationFailed(f"{state_dir}: not a directory")
    if not _trusted(st):
        raise _refuse(
            state_dir, f"owned by uid {st.st_uid}, not by you (uid {os.geteuid()}) or root"
        )
    if st.st_mode & 0o022:
        raise _refuse(
            state_dir,
            f"writable by other users (mode {stat.S_IMODE(st.st_mode):04o}; chmod 700 it)",
        )
    if created:
        _check_path(state_dir)  # the directories just made, and no swap meanwhile
    return True


# -- files ----------------------------------------------------------------------------


def open_bounded(path: Path, max_bytes: int) -> int | None:
    """An fd open for reading on a regular file of at most ``max_bytes``, or None if it
    does not exist.  Never follows a symlink, never blocks on a FIFO; a symlink, a file
    that is not regular or one too large raises :class:`Corrupt`.  Other OSErrors
    (EACCES) propagate.  The caller closes the fd and bounds what it reads."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Corrupt("a symbolic link (not followed)") from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Corrupt("not a regular file")
        if st.st_size > max_bytes:
            raise Corrupt(f"larger than {max_bytes} bytes")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(path: Path, max_bytes: int) -> bytes | None:
    """The whole file, or None if it does not exist, opened by :func:`open_bounded`;
    never reads more than ``max_bytes`` (raises :class:`Corrupt`)."""
    fd = open_bounded(path, max_bytes)
    if fd is None:
        return None
    try:
        parts: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            parts.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise Corrupt(f"larger than {max_bytes} bytes")
        return b"".join(parts)
    finally:
        os.close(fd)


_JSON_STRING = rb'"(?:[^"\\]|\\.)*"'  # compiled (and cached by re) on first use
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth_ok(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Whether ``data`` nests at most ``max_depth`` arrays/objects (strings skipped)."""
    brackets = re.sub(_JSON_STRING, b"", data, flags=re.DOTALL).translate(None, _NOT_BRACKETS)
    depth = 0
    for b in brackets:
        if b in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > max_depth:
                return False
        else:
            depth -= 1
    return True


def loads_bounded(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that raises :class:`Corrupt` for anything but a JSON document of
    bounded depth (``RecursionError`` and huge integers included)."""
    import json

    if (b"[" in data or b"{" in data) and not json_depth_ok(data, max_depth):
        raise Corrupt(f"nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise Corrupt(f"not valid JSON ({type(exc).__name__})") from exc


def _fresh_name(path: Path) -> str:
    from memcgctl.vocab.records import utc_file_stamp

    stamp = utc_file_stamp()
    base = f"{path.name}.corrupt-{stamp}"
    name, n = base, 0
    while os.path.lexists(path.with_name(name)):
        n += 1
        name = f"{base}-{n}"
    return name


def set_aside(path: Path, original: bytes | None = None) -> Path:
    """Move a corrupt file aside as ``NAME.corrupt-TIME`` (also a symlink or a FIFO:
    rename never follows).  With ``original``, write those bytes there instead and
    leave ``path`` for the caller to replace atomically (keeping a file's good part)."""
    target = path.with_name(_fresh_name(path))
    if original is None:
        os.rename(path, target)
        return target
    fd = os.open(
        target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
    )
    try:
        os.write(fd, original)
    finally:
        os.close(fd)
    return target


def mkstemp(path: Path) -> tuple[int, str]:
    """A new file beside ``path`` to be renamed over it: what ``tempfile.mkstemp``
    does (``0600``, ``O_EXCL``, ``O_NOFOLLOW``, a random name, tried again on a
    clash), without importing tempfile, which loads shutil, bz2, lzma and random: the
    daemon writes through here and keeps what it imported resident."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        tmp = str(path.parent / f".{path.name}.{os.urandom(6).hex()}.tmp")
        try:
            return os.open(tmp, flags, FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(path.parent))


def write_atomic(path: Path, data: bytes, sync: bool = True) -> None:
    """Replace ``path`` with ``data``: a new file (:func:`mkstemp`) in the same
    directory, fsynced (unless ``sync`` is False), renamed over it.  Raises OSError."""
    fd, tmp = mkstemp(path)
    try:
        try:
            os.write(fd, data)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def open_append(path: Path) -> int:
    """An ``O_APPEND`` descriptor (readable too, for ``pread``) on a regular file of
    ours, created ``0600``; a symlink or other non-file there is set aside first."""
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(2):
        try:
            fd = os.open(path, flags, FILE_MODE)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            set_aside(path)
            continue
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            if st.st_mode & 0o077 and st.st_uid == os.geteuid():
                os.fchmod(fd, FILE_MODE)  # older versions created 0644
            return fd
        os.close(fd)
        set_aside(path)
    raise OperationFailed(f"{path}: keeps being replaced by something that is not a file")


# -- locks ----------------------------------------------------------------------------


def _lock_fd(path: Path) -> int:
    """Open (creating) the lock file; replace it when someone else could open it."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        fd = -1
    if fd >= 0:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077:
            return fd
        os.close(fd)
    # Someone else may hold it open (a 0644 lock of an older version, a symlink):
    # a fresh private file takes its place; the old inode's holders no longer matter.
    write_atomic(path, b"")
    return os.open(path, flags, FILE_MODE)


def lock_holder(path: Path) -> int | None:
    """The pid holding an flock on ``path`` (from /proc/locks), if it can be told."""
    try:
        st = os.stat(path)
        with open("/proc/locks", "rb") as f:
            text = f.read(1 << 20)
    except OSError:
        return None
    suffix = f":{st.st_ino}".encode()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and b"FLOCK" in fields[:3] and fields[5].endswith(suffix):
            with suppress(ValueError):
                return int(fields[4])
    return None


def _flock_until(fd: int, deadline: float) -> bool:
    import fcntl  # only when a lock is taken: a one-shot read starts without it

    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            pass
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 0.05)


@contextmanager
def locked(state_dir: Path, lock_name: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive flock on ``state_dir/lock_name`` (the directory is vetted and
    created as needed), so concurrent writers of one file take turns.  Waits at most
    ``timeout`` seconds, then raises :class:`LockTimeout` naming the holder."""
    check_state_dir(state_dir, create=True)
    path = state_dir / lock_name
    deadline = time.monotonic() + max(0.0, timeout)
    while True:
        try:
            fd = _lock_fd(path)
        except OSError as exc:
            raise from_oserror(exc, str(path)) from exc
        if not _flock_until(fd, deadline):
            holder = lock_holder(path)
            os.close(fd)
            who = f"pid {holder}" if holder is not None else "another process"
            raise LockTimeout(f"{path}: held by {who} for more than {timeout:g}s; gave up")
        # still the file at that name? (another process may have replaced it meanwhile)
        try:
            same = os.path.samestat(os.fstat(fd), os.lstat(path))
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)
