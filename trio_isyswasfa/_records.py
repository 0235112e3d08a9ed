"""Slotted record classes, made cheaply at import: the part of :mod:`dataclasses` the
engine's model uses.

A ``run`` imports the engine's ~45 model and type classes before it reads a component.
As frozen slotted dataclasses they cost ~0.3-1 ms of CPU each to make on Python 3.11
(``dataclasses`` compiles each generated method with an ``exec`` of its own, six per
frozen class, then makes the class again for its slots): 30-40 ms of a ``run``'s
start-up. :func:`record` makes the same methods with one ``exec`` per class.

What it makes, as ``@dataclass(slots=True, ...)`` does: ``__init__`` (fields in
annotation order, with their defaults; ``dataclasses.field(default_factory=...)``
calls the factory per instance), ``__repr__`` (fields with ``repr=False`` left out),
``__eq__`` (same class only; fields with ``compare=False`` left out) and ``__hash__``
(frozen and ``eq``: of the compared fields; ``eq`` but not frozen: unhashable; without
``eq``: by identity), ``__match_args__``, ``__slots__`` (and ``__weakref__`` with
``weakref_slot``); frozen records refuse assignment with
:class:`dataclasses.FrozenInstanceError`. ``ClassVar`` annotations are not fields.

Not supported (a :class:`TypeError` at class creation says so, where it can tell):
inheriting fields from a base class, ``init=False``, ``kw_only`` and ordering. Records
are no dataclasses (``dataclasses.fields`` and ``replace`` do not take them).
"""

from __future__ import annotations

import dataclasses
import inspect
import reprlib
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

_T = TypeVar("_T", bound=type)

_FACTORY = object()  # the default of a field with a factory: made per instance


@overload
def record(cls: _T, /) -> _T: ...


@overload
def record(
    *, frozen: bool = False, eq: bool = True, weakref_slot: bool = False
) -> Callable[[_T], _T]: ...


@dataclass_transform(field_specifiers=(dataclasses.field,))
def record(
    cls: _T | None = None,
    /,
    *,
    frozen: bool = False,
    eq: bool = True,
    weakref_slot: bool = False,
) -> _T | Callable[[_T], _T]:
    """Make ``cls`` a slotted record class, as ``@dataclass(slots=True, frozen=...,
    eq=..., weakref_slot=...)`` would (see the module's docstring for what differs)."""

    def make(cls: _T) -> _T:
        return _make(cls, frozen=frozen, eq=eq, weakref_slot=weakref_slot)

    return make if cls is None else make(cls)


def _make(cls: _T, *, frozen: bool, eq: bool, weakref_slot: bool) -> _T:
    for base in cls.__mro__[1:-1]:
        if getattr(base, "__annotations__", None):
            raise TypeError(f"record {cls.__qualname__}: fields inherited from {base.__name__}")
    annotations: dict[str, Any] = inspect.get_annotations(cls)
    names: list[str] = []
    params: list[str] = []
    sets: list[str] = []
    shown: list[str] = []
    compared: list[str] = []
    namespace: dict[str, Any] = {
        "_FACTORY": _FACTORY,
        "_setattr": object.__setattr__,
    }
    for name, annotation in annotations.items():
        if str(annotation).startswith(("ClassVar", "typing.ClassVar")):
            continue
        default: Any = cls.__dict__.get(name, dataclasses.MISSING)
        factory: Any = dataclasses.MISSING
        show = compare = True
        if isinstance(default, dataclasses.Field):
            if not default.init or default.kw_only is True:
                raise TypeError(f"record {cls.__qualname__}.{name}: init=False or kw_only")
            factory, show, compare = default.default_factory, default.repr, default.compare
            default = default.default
        names.append(name)
        value = name
        if factory is not dataclasses.MISSING:
            namespace[f"_f_{name}"] = factory
            params.append(f"{name}=_FACTORY")
            value = f"_f_{name}() if {name} is _FACTORY else {name}"
        elif default is not dataclasses.MISSING:
            namespace[f"_d_{name}"] = default
            params.append(f"{name}=_d_{name}")
        elif any("=" in p for p in params):
            raise TypeError(f"record {cls.__qualname__}: {name} without a default follows one")
        else:
            params.append(name)
        sets.append(f"_setattr(self, {name!r}, {value})" if frozen else f"self.{name} = {value}")
        if show:
            shown.append(name)
        if compare:
            compared.append(name)
    # one compile for __init__, __eq__ and __hash__ (~0.2 ms; dataclasses compiles each
    # method alone); __repr__ and a frozen record's __setattr__ are closures and shared
    # functions, which run no slower
    mine = "".join(f"self.{n}," for n in compared)
    theirs = "".join(f"other.{n}," for n in compared)
    source = "\n".join(
        [
            f"def __init__(self, {', '.join(params)}):",
            *(f"    {line}" for line in sets or ["pass"]),
            "def __eq__(self, other):",
            "    if other.__class__ is self.__class__:",
            f"        return ({mine}) == ({theirs})",
            "    return NotImplemented",
            "def __hash__(self):",
            f"    return hash(({mine}))",
        ]
    )
    exec(source, namespace)
    methods: dict[str, Any] = {"__init__": namespace["__init__"], "__repr__": _repr(shown)}
    if eq:
        methods["__eq__"] = namespace["__eq__"]
        methods["__hash__"] = namespace["__hash__"] if frozen else None  # mutable: unhashable
    if frozen:
        methods["__setattr__"], methods["__delattr__"] = _frozen_setattr, _frozen_delattr
    body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    for name in names:
        body.pop(name, None)  # a default: kept by __init__, not as a class attribute
    body["__slots__"] = (*names, "__weakref__") if weakref_slot else tuple(names)
    body["__match_args__"] = tuple(names)
    for method, function in methods.items():
        if function is not None and method not in ("__setattr__", "__delattr__"):
            function.__qualname__ = f"{cls.__qualname__}.{method}"  # made for this class
        body.setdefault(method, function)
    made: _T = type(cls)(cls.__name__, cls.__bases__, body)
    return made


def _repr(shown: list[str]) -> Callable[[Any], str]:
    names = tuple(shown)

    @reprlib.recursive_repr()
    def __repr__(self: Any) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{self.__class__.__qualname__}({fields})"

    return __repr__


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
