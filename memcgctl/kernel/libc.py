"""The C library's functions by name, for the few calls the standard library lacks
(``mlockall``, ``mallopt``, ``syscall`` for ``process_mrelease``, inotify): what
``ctypes.CDLL(None, use_errno=True).NAME(...)`` does, through ``_ctypes`` (ctypes' C
half) alone.

ctypes' Python half defines its C types, arrays, endian structures and caches at import:
0.4 MiB the daemon kept resident for calls that take ints and bytes and return a C int
(issue 22, measured).  Here, as in ctypes without ``argtypes``/``restype``: an ``int``
argument is passed as a C int, ``bytes`` as a ``char *``, the result is a C int, and
:func:`errno` is the ``errno`` the last call of this thread left.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

try:  # ctypes' own C half, as ctypes itself uses it since Python 2.5
    import _ctypes

    _LIGHT = all(
        hasattr(_ctypes, name)
        for name in (
            "CFuncPtr",
            "dlopen",
            "get_errno",
            "FUNCFLAG_CDECL",
            "FUNCFLAG_USE_ERRNO",
            "RTLD_LOCAL",
        )
    )
except ImportError:  # an interpreter without it has no ctypes either: the error says so
    _LIGHT = False

if _LIGHT:

    class _Function(_ctypes.CFuncPtr):
        """A C function returning an int (no ``_restype_``: ctypes' default), errno
        saved (``use_errno=True``)."""

        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO


class Libc:
    """``dlopen(NULL)``: the program and the libraries it runs on, libc among them.
    ``Libc().NAME`` is that function (``dlsym``; AttributeError if there is none).
    Should a later CPython change ``_ctypes``' private interface, this is ctypes
    itself (the same calls; 0.4 MiB more)."""

    def __init__(self) -> None:
        if not _LIGHT:
            import ctypes

            self._cdll: object = ctypes.CDLL(None, use_errno=True)
            return
        # (older typeshed has no _ctypes.dlopen; newer types its name as a path only)
        self._handle: int = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)  # type: ignore[arg-type,attr-defined,unused-ignore]

    def __getattr__(self, name: str) -> Callable[..., int]:
        if name.startswith("_"):
            raise AttributeError(name)  # (copy, pickle, our own fields: not C functions)
        if not _LIGHT:
            function: Callable[..., int] = getattr(self._cdll, name)
        else:
            function = _Function((name, self))  # type: ignore[arg-type] # (its _handle: a CDLL)
        setattr(self, name, function)
        return function


def errno() -> int:
    """The errno of this thread's last :class:`Libc` call (``ctypes.get_errno()``)."""
    if not _LIGHT:
        import ctypes

        return ctypes.get_errno()
    return _ctypes.get_errno()
