"""memcgctl.vocab.structs: the records' dataclass without the dataclasses module (the
daemon's resident memory, issue 22), held to what dataclasses does for the same class."""

from __future__ import annotations

import copy
import dataclasses
import pickle
import typing
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memcgctl.vocab import structs

Deco = Callable[..., Any]
BOTH = [
    pytest.param((dataclasses.dataclass, dataclasses.field), id="dataclasses"),
    pytest.param((structs.light_dataclass, structs.light_field), id="structs"),
]


def shapes(deco: Deco, fld: Deco, frozen: bool, slots: bool = False) -> Any:
    @deco(frozen=frozen, slots=slots)
    class Rec:
        """A record."""

        a: int
        b: str = "x"
        c: list[int] = fld(default_factory=list)
        d: tuple[int, ...] = fld(default=())
        e: object = fld(default=None, compare=False, repr=False)
        f: dict[str, int] = fld(default_factory=dict, hash=False)

        def total(self) -> int:
            return self.a + len(self.c)

    return Rec


def observe(make: Callable[[], Any]) -> tuple[str, ...]:
    """What a test sees of a record's behaviour, as text: result or exception type."""
    try:
        out = make()
    except Exception as exc:  # the type is what must agree
        kind = "FrozenInstanceError" if isinstance(exc, AttributeError) else type(exc).__name__
        return ("raises", kind)
    return ("ok", repr(out))


args = st.tuples(
    st.integers(-3, 3),
    st.sampled_from(["x", "y"]),
    st.lists(st.integers(0, 2), max_size=2),
    st.tuples(st.integers(0, 2)),
    st.integers(0, 1),
)


def behaviour(deco: Deco, fld: Deco, frozen: bool, slots: bool, one: Any, other: Any) -> list[Any]:
    rec = shapes(deco, fld, frozen, slots)
    x, y = rec(*one[:4], e=one[4]), rec(*other[:4], e=other[4])
    return [
        observe(lambda: rec(1)),
        observe(lambda: x),
        observe(lambda: x == y),
        observe(lambda: x == rec(*one[:4], e="other")),  # e is not compared
        observe(lambda: x == one),
        observe(lambda: hash(x) == hash(rec(*one[:4], e=9, f={"k": 1}))),
        observe(lambda: {x: 1}[x]),
        observe(lambda: setattr(x, "a", 5)),
        observe(lambda: delattr(x, "b")),
        observe(lambda: x.total()),
        observe(lambda: rec(b="y")),  # a missing argument
        observe(lambda: rec(1, "x", [], (), None, {}, 7)),  # one too many
        observe(lambda: rec(1, z=2)),
        observe(lambda: rec.__match_args__),
        observe(lambda: rec(1).c is rec(1).c),  # a factory per instance
        observe(lambda: rec.d),  # a plain default stays on the class
        observe(lambda: hasattr(rec, "c")),  # a factory's does not
        observe(lambda: rec.__doc__),
        observe(lambda: hasattr(x, "__dict__")),
        observe(lambda: type(x).__qualname__),
        observe(lambda: x.__init__.__qualname__),
        observe(lambda: copy.copy(x) == x and copy.deepcopy(x) == x),
    ]


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize("slots", [False, True])
@given(one=args, other=args)
def test_behaves_as_dataclasses(frozen: bool, slots: bool, one: Any, other: Any) -> None:
    real = behaviour(dataclasses.dataclass, dataclasses.field, frozen, slots, one, other)
    light = behaviour(structs.light_dataclass, structs.light_field, frozen, slots, one, other)
    assert light == real


def replaced(deco: Deco, fld: Deco, fields: Deco, replace: Deco, frozen: bool) -> tuple[Any, ...]:
    rec = shapes(deco, fld, frozen)
    x = rec(1, c=[2])
    y = replace(x, b="z")
    return (
        [f.name for f in fields(x)],
        [f.name for f in fields(rec)],
        repr(y),
        y.c is x.c,  # replace passes the value, it does not call the factory
        x == rec(1, c=[2]),
        observe(lambda: replace(x, nope=1)),
        observe(lambda: fields(object())),
    )


@pytest.mark.parametrize("frozen", [False, True])
def test_replace_and_fields(frozen: bool) -> None:
    real = replaced(
        dataclasses.dataclass, dataclasses.field, dataclasses.fields, dataclasses.replace, frozen
    )
    light = replaced(
        structs.light_dataclass,
        structs.light_field,
        structs.light_fields,
        structs.light_replace,
        frozen,
    )
    assert light == real


def own_methods(deco: Deco, fld: Deco) -> tuple[Any, Any, Any]:
    @deco(frozen=True)
    class Rec:
        a: int
        b: list[int] = fld(default_factory=list)

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a < 0")
            object.__setattr__(self, "b", [*self.b, self.a])

        def __repr__(self) -> str:
            return f"<{self.a}>"

    @deco
    class Mutable:
        a: int

    @deco(frozen=True)
    class OwnHash:
        a: int

        def __hash__(self) -> int:
            return 7

    return Rec, Mutable, OwnHash


@pytest.mark.parametrize("pair", BOTH)
def test_post_init_runs_last_and_own_methods_stay(pair: tuple[Deco, Deco]) -> None:
    rec, mutable, own_hash = own_methods(*pair)
    assert rec(2).b == [2] and repr(rec(3)) == "<3>"
    with pytest.raises(ValueError, match="a < 0"):
        rec(-1)
    m = mutable(1)
    m.a = 2
    assert m == mutable(2) and mutable.__hash__ is None  # eq without frozen: unhashable
    assert hash(own_hash(1)) == 7 and own_hash(1) == own_hash(1)


def test_frozen_error_is_an_attribute_error() -> None:
    @structs.dataclass(frozen=True)  # to mypy, dataclasses'; at run time, ours
    class Rec:
        a: int

    with pytest.raises(structs.FrozenInstanceError, match="cannot assign to field 'a'"):
        Rec(1).a = 2  # type: ignore[misc]
    assert issubclass(structs.LightFrozenInstanceError, AttributeError)
    assert not dataclasses.is_dataclass(Rec)


def test_what_it_does_not_support_is_refused() -> None:
    with pytest.raises(ValueError, match="both default and default_factory"):
        structs.light_field(default=1, default_factory=list)
    with pytest.raises(TypeError, match="follows default argument"):

        @structs.dataclass
        class Order:
            a: int = 1
            b: int  # type: ignore[misc]

    @structs.dataclass
    class Base:
        a: int

    with pytest.raises(TypeError, match="do not inherit"):

        @structs.dataclass
        class Sub(Base):
            b: int


def test_the_records_are_the_light_ones_at_run_time() -> None:
    """The daemon's records go through structs: none is a dataclasses one."""
    from memcgctl.daemon.config import DaemonConfig
    from memcgctl.vocab.model import CgroupInfo, Snapshot

    for rec in (DaemonConfig, CgroupInfo, Snapshot):
        assert not dataclasses.is_dataclass(rec) and structs.light_fields(rec)


# pickle and copy find a class by its module and name: these are at module level
@structs.light_dataclass(frozen=True, slots=True)
class LightSlotted:
    a: int
    b: tuple[int, ...] = ()


@structs.light_dataclass(frozen=True)
class LightFrozen:
    a: int
    b: tuple[int, ...] = ()


@structs.light_dataclass
class LightPlain:
    a: int
    b: tuple[int, ...] = ()


@pytest.mark.parametrize("rec", [LightSlotted, LightFrozen, LightPlain])
def test_pickled_and_copied_by_value(rec: Any) -> None:
    x = rec(1, (2, 3))
    for y in (pickle.loads(pickle.dumps(x)), copy.copy(x), copy.deepcopy(x)):
        assert y == x and y is not x and type(y) is rec
    assert hasattr(x, "__dict__") is (rec is not LightSlotted)


# -- typing's names at run time ----------------------------------------------------------


def named_tuple(base: Any) -> Any:
    class Row(base):  # type: ignore[misc]
        """A row."""

        a: int
        b: str = "x"
        c: tuple[int, ...] = ()

        def total(self) -> int:
            return self.a + len(self.c)

        @property
        def label(self) -> str:
            return f"{self.b}{self.a}"

    return Row


def tuple_behaviour(base: Any, a: int, b: str) -> list[Any]:
    row = named_tuple(base)
    x = row(a, b)
    return [
        observe(lambda: x),
        observe(lambda: tuple(x)),
        observe(lambda: x == (a, b, ())),
        observe(lambda: hash(x) == hash((a, b, ()))),
        observe(lambda: x._replace(b="y")),
        observe(lambda: x._asdict()),
        observe(lambda: row._fields),
        observe(lambda: row._field_defaults),
        observe(lambda: row._make([1, "z", (2,)])),
        observe(lambda: (x.total(), x.label, row.__doc__, row.__qualname__)),
        observe(lambda: row.__mro__[1:]),
        observe(lambda: row()),  # a missing field
        observe(lambda: row(1, "x", (), 4)),  # one too many
        observe(lambda: setattr(x, "a", 2)),
        observe(lambda: pickle.loads(pickle.dumps(row)) is row or "local"),
    ]


@given(a=st.integers(-5, 5), b=st.text(max_size=3))
def test_named_tuple_behaves_as_typing(a: int, b: str) -> None:
    assert tuple_behaviour(structs.LightNamedTuple, a, b) == tuple_behaviour(
        typing.NamedTuple, a, b
    )


LightNT: Any = structs.LightNamedTuple


class LightRow(LightNT):  # type: ignore[misc]
    a: int
    b: int = 2


def test_named_tuple_pickles_and_refuses_what_it_does_not_support() -> None:
    x = LightRow(1)
    assert pickle.loads(pickle.dumps(x)) == x == (1, 2) and type(x).__module__ == __name__
    with pytest.raises(TypeError, match="follows one with a default"):

        class Bad(LightNT):  # type: ignore[misc]
            a: int = 1
            b: int

    with pytest.raises(TypeError, match="class form"):
        structs.LightNamedTuple("Row", [("a", int)])


def test_typed_dict_makes_plain_dicts_and_cast_returns_its_value() -> None:
    class Kind(structs.LightTypedDict):  # type: ignore[misc]
        kind: str

    class Record(Kind, total=False):  # type: ignore[call-arg]
        time: str

    for cls in (Kind, Record):
        made = cls(kind="k", time="t")
        assert type(made) is dict and made == {"kind": "k", "time": "t"}
    value = {"a": 1}
    assert structs.light_cast("dict[str, int]", value) is value


def test_a_protocol_is_a_plain_base() -> None:
    class Core(structs.LightProtocol):
        def wake(self) -> int:
            raise NotImplementedError

    class Real(Core):
        def wake(self) -> int:
            return 1

    assert Real().wake() == 1 and Core.__mro__ == (Core, structs.LightProtocol, object)


def test_to_the_type_checker_they_are_typings() -> None:
    """At run time the names are ours; mypy sees typing's and dataclasses' own (they
    are imported under TYPE_CHECKING, which is False at run time)."""
    names = vars(structs)
    assert names["NamedTuple"] is structs.LightNamedTuple
    assert names["Protocol"] is structs.LightProtocol
    assert names["TypedDict"] is structs.LightTypedDict
    assert names["cast"] is structs.light_cast and names["TYPE_CHECKING"] is False
