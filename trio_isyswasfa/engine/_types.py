"""Component-model types as the engine sees them: the reader builds them, the canonical ABI
specialises its lifting and lowering on them once per function.

Every type is an immutable value (compared and hashed by structure) except
:class:`ResourceType`, which is generative: two resource types are the same only if they
are the same object, as in the component model, where each ``resource`` definition (and
each instantiation of a component defining one) makes a new type.
"""

from __future__ import annotations

import enum

from .._records import record


class Primitive(enum.Enum):
    """The component model's primitive value types, by their WIT names."""

    BOOL = "bool"
    S8 = "s8"
    U8 = "u8"
    S16 = "s16"
    U16 = "u16"
    S32 = "s32"
    U32 = "u32"
    S64 = "s64"
    U64 = "u64"
    F32 = "f32"
    F64 = "f64"
    CHAR = "char"
    STRING = "string"
    ERROR_CONTEXT = "error-context"


@record(frozen=True)
class PrimType:
    """A primitive type (``u32``, ``string``…)."""

    kind: Primitive


@record(frozen=True)
class ListType:
    """``list<element>``; ``length`` is set for a fixed-length list (``list<T, N>``)."""

    element: ValType
    length: int | None = None


@record(frozen=True)
class RecordType:
    """``record { name: type, … }``, fields in declaration order."""

    fields: tuple[tuple[str, ValType], ...]


@record(frozen=True)
class TupleType:
    """``tuple<…>``."""

    elements: tuple[ValType, ...]


@record(frozen=True)
class VariantType:
    """``variant { case(payload), case, … }``; a case without payload has ``None``."""

    cases: tuple[tuple[str, ValType | None], ...]


@record(frozen=True)
class EnumType:
    """``enum { a, b, … }``."""

    names: tuple[str, ...]


@record(frozen=True)
class OptionType:
    """``option<inner>``."""

    inner: ValType


@record(frozen=True)
class ResultType:
    """``result<ok, err>``; either side may be absent (``None``)."""

    ok: ValType | None
    err: ValType | None


@record(frozen=True)
class FlagsType:
    """``flags { a, b, … }``."""

    names: tuple[str, ...]


@record(eq=False)
class ResourceType:
    """A resource type; compared by identity (resource types are generative).

    ``name`` is for messages only. ``host_kind`` is the host's resource kind id
    (``ResourceKind``) for a resource the host defines; ``None`` for one a component
    defines, whose handles the instance's own tables keep.
    """

    name: str
    host_kind: int | None = None


@record(frozen=True)
class OwnType:
    """``own<resource>`` (a plain resource name in WIT)."""

    resource: ResourceType


@record(frozen=True)
class BorrowType:
    """``borrow<resource>``."""

    resource: ResourceType


@record(frozen=True)
class StreamType:
    """``stream<element>`` (WASI 0.3); ``element`` is ``None`` for a unit stream."""

    element: ValType | None


@record(frozen=True)
class FutureType:
    """``future<value>`` (WASI 0.3); ``value`` is ``None`` for a unit future."""

    value: ValType | None


ValType = (
    PrimType
    | ListType
    | RecordType
    | TupleType
    | VariantType
    | EnumType
    | OptionType
    | ResultType
    | FlagsType
    | OwnType
    | BorrowType
    | StreamType
    | FutureType
)


@record(frozen=True)
class FuncType:
    """A component function type: named parameters, at most one result.

    ``is_async`` marks an ``async func`` (WASI 0.3): the canonical ABI's async lifting
    and lowering apply to it.
    """

    params: tuple[tuple[str, ValType], ...]
    result: ValType | None
    is_async: bool = False
