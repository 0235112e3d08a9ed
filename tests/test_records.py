"""``_records.record``: the slotted record classes of the engine's model and the
protocol's events behave as the dataclasses they replace (made for start-up's sake)."""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import field
from typing import Any, ClassVar

import pytest

from trio_isyswasfa._records import record


@record(frozen=True)
class Point:
    """A frozen record."""

    x: int
    y: int = 0
    kind: ClassVar[str] = "point"


@dataclasses.dataclass(frozen=True, slots=True)
class PointDc:
    """Its dataclass twin."""

    x: int
    y: int = 0


@record
class Bag:
    """A mutable one, with factories and a field left out of its repr."""

    name: str
    items: list[int] = field(default_factory=list)
    cache: dict[str, Any] = field(default_factory=dict, repr=False)


@record(eq=False, weakref_slot=True)
class Node:
    """Compared by identity, weakly referable."""

    label: str


class TestFrozen:
    def test_init_repr_eq_hash_as_a_dataclass(self) -> None:
        p = Point(1, 2)
        assert (p.x, p.y, Point(3).y) == (1, 2, 0)
        assert repr(p) == "Point(x=1, y=2)"
        assert repr(p).replace("Point", "PointDc") == repr(PointDc(1, 2))
        assert p == Point(1, 2)
        assert p != Point(1, 3)
        assert hash(p) == hash(Point(1, 2))
        assert len({p, Point(1, 2), Point(2, 1)}) == 2
        assert Point(x=1, y=2) == p
        assert p != PointDc(1, 2)  # another class: not equal

    def test_refuses_assignment(self) -> None:
        p = Point(1)
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.x = 2  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            del p.x  # type: ignore[misc]
        with pytest.raises(AttributeError):
            p.z = 1  # type: ignore[attr-defined]

    def test_slots_match_args_and_class_vars(self) -> None:
        assert Point.__slots__ == ("x", "y")
        assert Point.__match_args__ == ("x", "y")
        assert Point.kind == "point"  # a ClassVar is no field
        assert Point.__doc__ == "A frozen record."
        assert not hasattr(Point(1), "__dict__")
        match Point(4, 5):
            case Point(a, b):
                assert (a, b) == (4, 5)

    def test_argument_errors(self) -> None:
        with pytest.raises(TypeError):
            Point()  # type: ignore[call-arg]
        with pytest.raises(TypeError):
            Point(1, 2, 3)  # type: ignore[call-arg]


class TestMutable:
    def test_factories_make_one_value_each(self) -> None:
        a, b = Bag("a"), Bag("b")
        a.items.append(1)
        assert (a.items, b.items) == ([1], [])
        assert Bag("c", [2]).items == [2]
        assert repr(a) == "Bag(name='a', items=[1])"

    def test_compared_by_value_and_unhashable(self) -> None:
        assert Bag("a", [1]) == Bag("a", [1])
        assert Bag.__hash__ is None
        bag = Bag("a")
        bag.name = "b"
        assert bag.name == "b"

    def test_identity_records(self) -> None:
        a = Node("r")
        assert a != Node("r")
        assert a == a
        assert hash(a) == object.__hash__(a)
        assert weakref.ref(a)() is a
        assert Node.__slots__ == ("label", "__weakref__")


class TestRefused:
    def test_a_field_without_default_after_one_with(self) -> None:
        with pytest.raises(TypeError, match="without a default"):

            @record
            class Bad:
                a: int = 1
                b: int  # type: ignore[misc]

    def test_inherited_fields(self) -> None:
        with pytest.raises(TypeError, match="inherited"):

            @record
            class Child(Point):  # type: ignore[misc]
                z: int = 0

    def test_init_false_fields(self) -> None:
        with pytest.raises(TypeError, match="init=False"):

            @record
            class Bad:
                a: int = field(default=0, init=False)


def test_a_recursive_repr_ends() -> None:
    bag = Bag("loop")
    bag.items.append(bag)  # type: ignore[arg-type]
    assert repr(bag) == "Bag(name='loop', items=[...])"
