"""How memcgctl names a cgroup: :class:`CgroupPath`, the one place path arithmetic happens.

A cgroup is named by its path inside the hierarchy (``/`` for the hierarchy root,
``/batch/job1`` below it), never by a file-system path (that is ``CgroupFs.path``).
``CgroupPath`` is a ``str`` subclass: JSON, sorting, dict keys, printing and log text
see the same string as before, while the type checker tells a cgroup from any other
text.  Text from outside (the command line, ``/proc/PID/cgroup``, the kernel log, the
journal) becomes a ``CgroupPath`` where it is read.

``ROOT`` (the hierarchy's root cgroup) and ``HOST`` (the whole machine, which the daemon
manages with ``--host-delay``) both print as ``/``, but are different types: a
``HostScope`` is not a ``CgroupPath``, so it cannot be handed to code that reads cgroup
files, and ``isinstance(x, HostScope)`` tells the two apart.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Final

__all__ = ["HOST", "ROOT", "CgroupPath", "HostScope", "Scope"]

_BAD_PARTS = frozenset({".", ".."})


class CgroupPath(str):
    """A cgroup, relative to its hierarchy's root: ``/`` or ``/a/b``.

    Always normalised: one leading ``/``, no trailing ``/``, no empty, ``.`` or ``..``
    component and no NUL.  ``CgroupPath("a//b/")`` is ``/a/b``; ``..`` and ``.`` raise
    ValueError (a cgroup name cannot be either: kernfs refuses them).
    """

    __slots__ = ()

    def __new__(cls, path: str) -> CgroupPath:
        if type(path) is cls:
            return path
        if not isinstance(path, str):
            raise TypeError(f"a cgroup path is text, not {type(path).__name__}")
        if "\0" in path:
            raise ValueError(f"{path!r}: NUL in a cgroup path")
        parts = [p for p in path.split("/") if p]
        if _BAD_PARTS.intersection(parts):
            raise ValueError(f"{path}: '.' and '..' are not cgroup names")
        return str.__new__(cls, "/" + "/".join(parts))

    @classmethod
    def parse(cls, text: object) -> CgroupPath | None:
        """``text`` as a cgroup path, or None if it is not one (not text, or with ``..``):
        for fields of records read from outside, which may hold anything."""
        if not isinstance(text, str):
            return None
        try:
            return cls(text)
        except ValueError:
            return None

    # -- the tree -----------------------------------------------------------------------
    @property
    def is_root(self) -> bool:
        return len(self) == 1

    @property
    def parent(self) -> CgroupPath | None:
        """The parent cgroup; None for the root (it has none: walking up ends there)."""
        if len(self) == 1:
            return None
        head = self[: self.rindex("/")]
        return _trusted(head) if head else ROOT

    @property
    def name(self) -> str:
        """The last component (the directory's name); ``/`` for the root."""
        return self if len(self) == 1 else self[self.rindex("/") + 1 :]

    @property
    def parts(self) -> tuple[str, ...]:
        """The components below the root: ``()`` for the root, ``("a", "b")`` for /a/b."""
        return () if len(self) == 1 else tuple(self[1:].split("/"))

    @property
    def depth(self) -> int:
        """How many levels below the root (the root is 0)."""
        return 0 if len(self) == 1 else self.count("/")

    def child(self, name: str) -> CgroupPath:
        """The child cgroup ``name``: one component, not empty, ``.``, ``..``, and
        without ``/`` or NUL (ValueError).  (Not ``join``: that is ``str.join``.)"""
        if not name or "/" in name or "\0" in name or name in _BAD_PARTS:
            raise ValueError(f"{name!r}: not a cgroup name")
        # str.__new__ directly: a host-wide walk names every cgroup through here
        return _new(CgroupPath, ("/" if len(self) == 1 else self + "/") + name)

    def ancestors(self) -> list[CgroupPath]:
        """Every cgroup above this one, nearest first, ending with the root."""
        out: list[CgroupPath] = []
        cur = self.parent
        while cur is not None:
            out.append(cur)
            cur = cur.parent
        return out

    # -- the subtree test -----------------------------------------------------------------
    def contains(self, other: str) -> bool:
        """``other`` is this cgroup or below it: ``/a`` contains ``/a`` and ``/a/b``, not
        ``/ab``; the root contains everything.  ``other`` may be any text (a field of a
        journal record, say): it is compared, not trusted."""
        return len(self) == 1 or other == self or other.startswith(self + "/")


_new = str.__new__


def _trusted(text: str) -> CgroupPath:
    """A CgroupPath from text built by the methods above (already normal): the hot paths
    (a host-wide walk names every cgroup) skip the validation."""
    return str.__new__(CgroupPath, text)


class HostScope(str):
    """The whole machine, as the daemon's ``--host-delay`` manages it: not a cgroup.
    It prints as ``/`` (journal records and log lines are unchanged)."""

    __slots__ = ()


ROOT: Final = _trusted("/")
HOST: Final = str.__new__(HostScope, "/")
# what the daemon watches: a memcg, or the host
Scope = CgroupPath | HostScope


def in_subtree(cgroup: str | None, root: CgroupPath) -> bool:
    """``cgroup`` (a record's field: any text, or None) is ``root`` or below it."""
    return root.is_root or (cgroup is not None and root.contains(cgroup))
