"""Our records' ``@dataclass``, ``field``, ``fields`` and ``replace`` without the
:mod:`dataclasses` module, which imports :mod:`inspect` (and ``ast``, ``dis``,
``tokenize`` behind it) at start: 1.2 MiB of the idle daemon's resident memory for 38
records (issue 22: daemon + guardian ≤ 20 MiB).

To the type checker these names *are* :mod:`dataclasses`' (it checks the records as
it always did); at run time they are the small subset below, which does what our
records use of it and no more:

* ``@dataclass``, ``@dataclass(frozen=True)``, ``@dataclass(frozen=True, slots=True)``
  (no ``order``, ``kw_only``, ``InitVar``, ``ClassVar`` fields, no inheritance between
  records);
* ``field(default=…)``, ``field(default_factory=…)``, and ``compare``/``hash``/``repr``
  ``=False``;
* ``__init__`` (generated source, as :mod:`dataclasses` does: building records is on
  the snapshot's path), ``__post_init__``, ``__repr__``, ``__eq__``, ``__hash__``
  (frozen records; an unfrozen one is unhashable), ``__match_args__``, frozen
  ``__setattr__``/``__delattr__`` raising :class:`FrozenInstanceError`;
* ``fields(record)`` (``.name``, ``.type``) and ``replace(record, **changes)``.

A method the class defines itself (``__repr__``, ``__eq__``, ``__hash__``) is kept, as
:mod:`dataclasses` keeps it.

The same for what the daemon's modules need of :mod:`typing` at run time (0.5 MiB
resident): ``NamedTuple`` (a :func:`collections.namedtuple` with the class's defaults
and methods, as :mod:`typing` builds it), ``Protocol`` (a plain base: nothing checks a
protocol at run time here), ``TypedDict`` (a class whose call makes a plain ``dict``)
and ``cast``.  Those modules write ``TYPE_CHECKING = False`` (mypy takes the name for
:data:`typing.TYPE_CHECKING`) and import :mod:`typing`'s other names under it.
``tests/test_structs.py`` holds each of these to what :mod:`dataclasses` and
:mod:`typing` do.
"""

from __future__ import annotations

from collections import namedtuple
from operator import attrgetter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = ["FrozenInstanceError", "NamedTuple", "Protocol", "TypedDict", "cast", "dataclass"]
__all__ += ["field", "fields", "replace"]

_MISSING: Any = type("_MISSING", (), {"__repr__": lambda self: "<missing>"})()


class LightFrozenInstanceError(AttributeError):
    """An assignment to a frozen record's field (as ``dataclasses.FrozenInstanceError``)."""


class LightField:
    """One field of a record: what ``dataclasses.Field`` holds that we use."""

    __slots__ = ("compare", "default", "default_factory", "hash", "name", "repr", "type")

    def __init__(
        self, default: Any, default_factory: Any, compare: bool, hash: bool | None, repr: bool
    ) -> None:
        self.name = ""
        self.type: object = None
        self.default = default
        self.default_factory = default_factory
        self.compare = compare
        self.hash = compare if hash is None else hash
        self.repr = repr

    def __repr__(self) -> str:
        return f"Field(name={self.name!r})"


def light_field(
    *,
    default: Any = _MISSING,
    default_factory: Any = _MISSING,
    compare: bool = True,
    hash: bool | None = None,
    repr: bool = True,
) -> Any:
    if default is not _MISSING and default_factory is not _MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return LightField(default, default_factory, compare, hash, repr)


_FIELDS = "__light_fields__"


def light_fields(record: Any) -> tuple[LightField, ...]:
    try:
        found: tuple[LightField, ...] = getattr(record, _FIELDS)
    except AttributeError:
        raise TypeError("must be called with a dataclass type or instance") from None
    return found


def light_replace(record: Any, /, **changes: Any) -> Any:
    for f in light_fields(record):
        if f.name not in changes:
            changes[f.name] = getattr(record, f.name)
    return record.__class__(**changes)


def _own_fields(cls: type) -> list[LightField]:
    out = []
    for name, annotation in getattr(cls, "__annotations__", {}).items():
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        if text.startswith(("ClassVar", "typing.ClassVar", "InitVar", "dataclasses.InitVar")):
            raise TypeError(f"{cls.__name__}.{name}: ClassVar/InitVar fields are not supported")
        value = cls.__dict__.get(name, _MISSING)
        f = (
            value
            if isinstance(value, LightField)
            else LightField(value, _MISSING, True, None, True)
        )
        f.name, f.type = name, annotation
        if isinstance(value, LightField):  # the class keeps a plain default only
            if f.default is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        out.append(f)
    return out


def _init(cls: type, fs: list[LightField], frozen: bool) -> Any:
    """``__init__`` from source, like :mod:`dataclasses`: positional-or-keyword
    parameters in field order, defaults and factories, ``__post_init__`` last."""
    params, body = [], []
    scope: dict[str, Any] = {"__MISSING": _MISSING, "__setattr": object.__setattr__}
    seen_default = False
    for f in fs:
        if f.default is not _MISSING:
            scope[f"__dflt_{f.name}"] = f.default
            params.append(f"{f.name}=__dflt_{f.name}")
            value = f.name
        elif f.default_factory is not _MISSING:
            scope[f"__fact_{f.name}"] = f.default_factory
            params.append(f"{f.name}=__MISSING")
            value = f"__fact_{f.name}() if {f.name} is __MISSING else {f.name}"
        else:
            if seen_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
            params.append(f.name)
            value = f.name
        seen_default = (
            seen_default or f.default is not _MISSING or f.default_factory is not _MISSING
        )
        if frozen:
            body.append(f"__setattr(self, {f.name!r}, {value})")
        else:
            body.append(f"self.{f.name} = {value}")
    if hasattr(cls, "__post_init__"):
        body.append("self.__post_init__()")
    source = f"def __init__(self, {', '.join(params)}):\n"
    source += "".join(f"  {line}\n" for line in body or ["pass"])
    exec(source, scope)
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise LightFrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise LightFrozenInstanceError(f"cannot delete field {name!r}")


def _getter(names: list[str]) -> Callable[[Any], Any]:
    """The values of a record's fields ``names``, as one tuple (a C ``attrgetter`` for
    two or more)."""
    if len(names) > 1:
        return attrgetter(*names)

    def values(record: Any) -> tuple[Any, ...]:
        return tuple(getattr(record, name) for name in names)

    return values


def _process(cls: type, frozen: bool, slots: bool) -> type:
    if any(_FIELDS in vars(base) for base in cls.__mro__[1:]):
        raise TypeError(f"{cls.__name__}: records do not inherit from records here")
    fs = _own_fields(cls)
    names = tuple(f.name for f in fs)
    shown = [f.name for f in fs if f.repr]
    compared = [f.name for f in fs if f.compare]
    hashed = [f.name for f in fs if f.hash]
    own = cls.__dict__

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{self.__class__.__qualname__}({inner})"

    key = _getter(compared)

    def __eq__(self: Any, other: Any) -> bool:
        if other.__class__ is self.__class__:
            return bool(key(self) == key(other))
        return NotImplemented

    hash_key = _getter(hashed)

    def __hash__(self: Any) -> int:
        return hash(hash_key(self))

    attrs: dict[str, Any] = {"__repr__": __repr__, "__eq__": __eq__, "__match_args__": names}
    if frozen:
        attrs.update(__setattr__=_frozen_setattr, __delattr__=_frozen_delattr)
    for name, value in attrs.items():
        if name not in own:  # what the class defines itself stays
            if callable(value):
                value.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, value)
    if "__init__" not in own:
        cls.__init__ = _init(cls, fs, frozen)  # type: ignore[misc]
    # __hash__ as dataclasses (eq=True): a class's own stays (the None Python puts in a
    # class that defines __eq__ alone is not its own); else frozen hashes its fields
    # and unfrozen is unhashable
    class_hash = own.get("__hash__", _MISSING)
    if class_hash is _MISSING or (class_hash is None and "__eq__" in own):
        if frozen:
            __hash__.__qualname__ = f"{cls.__qualname__}.__hash__"
        cls.__hash__ = __hash__ if frozen else None  # type: ignore[assignment]
    setattr(cls, _FIELDS, tuple(fs))
    if slots:
        cls = _with_slots(cls, names, frozen)
    return cls


def _with_slots(cls: type, names: tuple[str, ...], frozen: bool) -> type:
    """A new class with ``__slots__`` (as ``dataclass(slots=True)``: a class cannot get
    slots after it was made; frozen, it is pickled and copied by its fields' values, as
    the frozen ``__setattr__`` refuses the default way)."""
    body = dict(cls.__dict__)
    for name in (*names, "__dict__", "__weakref__"):
        body.pop(name, None)
    body["__slots__"] = names
    if frozen:

        def __getstate__(self: Any) -> list[Any]:
            return [getattr(self, name) for name in names]

        def __setstate__(self: Any, state: list[Any]) -> None:
            for name, value in zip(names, state, strict=True):
                object.__setattr__(self, name, value)

        body.update(__getstate__=__getstate__, __setstate__=__setstate__)
    new = type(cls)(cls.__name__, cls.__bases__, body)
    new.__qualname__ = cls.__qualname__
    return new


def light_dataclass(
    cls: type | None = None, /, *, frozen: bool = False, slots: bool = False
) -> Any:
    if cls is None:
        return lambda c: _process(c, frozen, slots)
    return _process(cls, frozen, slots)


# -- typing's, at run time --------------------------------------------------------------

_NOT_COPIED = {"__module__", "__qualname__", "__annotations__", "__dict__", "__weakref__"}


class _NamedTupleMeta(type):
    """``class C(NamedTuple)``: a :func:`collections.namedtuple` of the annotated
    fields, their defaults, and the class's other attributes (its methods)."""

    def __new__(mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any]) -> Any:
        if bases != (_LightNamedTupleBase,):
            raise TypeError(f"{name}: only a direct NamedTuple subclass is supported")
        names = list(ns.get("__annotations__", {}))
        defaults = [ns[f] for f in names if f in ns]
        if any(f not in ns for f in names[len(names) - len(defaults) :]):
            raise TypeError(f"{name}: a field without a default follows one with a default")
        nt = namedtuple(name, names, defaults=defaults, module=ns["__module__"])  # type: ignore[misc]
        nt.__annotations__ = ns.get("__annotations__", {})
        for key, value in ns.items():
            if key in names and key in ns:
                continue  # the default: namedtuple keeps it in _field_defaults
            if key in ("_fields", "_make", "_replace", "_asdict", "_field_defaults"):
                raise AttributeError(f"cannot overwrite NamedTuple attribute {key}")
            if key not in _NOT_COPIED:
                setattr(nt, key, value)
        nt.__qualname__ = ns.get("__qualname__", name)
        return nt


_LightNamedTupleBase: Any = type.__new__(_NamedTupleMeta, "NamedTuple", (), {})


def LightNamedTuple(*args: Any, **kwargs: Any) -> Any:
    raise TypeError("only the class form, class C(NamedTuple), is supported")


LightNamedTuple.__mro_entries__ = lambda bases: (_LightNamedTupleBase,)  # type: ignore[attr-defined]


class LightProtocol:
    """A protocol's base at run time: a plain class (the type checker does the work)."""

    __slots__ = ()


class _TypedDictMeta(type):
    """``class C(TypedDict)`` (``total=False`` too): calling it makes a plain dict."""

    def __new__(
        mcs, name: str, bases: tuple[type, ...], ns: dict[str, Any], total: bool = True
    ) -> Any:
        return super().__new__(mcs, name, (dict,), ns)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return dict(*args, **kwargs)


LightTypedDict: Any = type.__new__(_TypedDictMeta, "TypedDict", (dict,), {})


def light_cast(typ: object, value: T) -> T:
    return value


if TYPE_CHECKING:
    from typing import NamedTuple as NamedTuple
    from typing import Protocol as Protocol
    from typing import TypedDict as TypedDict
    from typing import cast as cast
else:
    NamedTuple, Protocol, TypedDict, cast = (
        LightNamedTuple,
        LightProtocol,
        LightTypedDict,
        light_cast,
    )

if TYPE_CHECKING:
    from dataclasses import FrozenInstanceError as FrozenInstanceError
    from dataclasses import dataclass as dataclass
    from dataclasses import field as field
    from dataclasses import fields as fields
    from dataclasses import replace as replace
else:
    FrozenInstanceError = LightFrozenInstanceError
    dataclass, field = light_dataclass, light_field
    fields, replace = light_fields, light_replace
