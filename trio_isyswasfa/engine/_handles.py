"""Handle tables: what a component instance's integer handles stand for.

One table per instance, as in the component model: index 0 is never used, freed
indices are reused, and at most ``MAX_LENGTH`` entries exist. Today's entries are
:class:`ResourceHandle` (``own`` and ``borrow``); WASI 0.3's waitables (subtasks,
stream and future ends) and waitable sets will be entries of the same table (see
:class:`AsyncEnd`), so that one index space serves every ``canon`` built-in, as the
specification has it.

The rules (``CanonicalABI.md``), each a trap of the guest (:class:`GuestTrap`) when
broken:

* an index that does not exist, or names another resource type (or not a resource);
* an ``own`` handle moved out (lifted) or dropped while it is lent to a call;
* a ``borrow`` handle lifted where an ``own`` is expected;
* a ``borrow`` handle given to a guest for one call (its :class:`CallScope`) still in
  its table when that call returns;
* a borrow dropped twice: the second drop finds its index free (or reused).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .._errors import GuestTrap
from ._types import ResourceType


def _trap(message: str) -> GuestTrap:
    return GuestTrap(f"canonical ABI: {message}")


class ResourceHandle:
    """One entry for a resource: ``own`` or ``borrow`` of ``resource`` with ``rep``."""

    __slots__ = ("lends", "own", "rep", "resource", "scope")

    def __init__(
        self, resource: ResourceType, rep: int, own: bool, scope: CallScope | None = None
    ) -> None:
        self.resource = resource
        self.rep = rep
        self.own = own
        self.scope = scope  # for a borrow: the call it was lent for
        self.lends = 0  # for an own: how many calls hold a borrow of it

    def __repr__(self) -> str:
        kind = "own" if self.own else "borrow"
        return f"<{kind} {self.resource.name} rep={self.rep}>"


_new = object.__new__


class AsyncEnd:
    """Base of the WASI 0.3 table entries that cross as ``stream<T>`` / ``future<T>``.

    A readable end is lifted out of one table (moved) and lowered into another; the
    async layer subclasses this with the shared buffer state. ``value_type`` is the
    ``StreamType`` or ``FutureType`` the end was made for.
    """

    __slots__ = ("busy", "readable", "value_type")

    def __init__(self, value_type: object, readable: bool) -> None:
        self.value_type = value_type
        self.readable = readable
        self.busy = False  # a copy is in progress: the end cannot move


class CallScope:
    """The borrow bookkeeping of one call across the component boundary.

    Borrows lowered *into* a guest for this call count in ``borrows`` and must all be
    dropped by the time the call returns; ``own`` handles lent *out of* a guest's table
    for this call are kept in ``lenders`` and may be moved or dropped again once the
    call is over (:meth:`finish`).
    """

    __slots__ = ("borrows", "lenders")

    def __init__(self) -> None:
        self.borrows = 0
        self.lenders: list[ResourceHandle] = []

    def lend(self, handle: ResourceHandle) -> None:
        """``handle`` (an own) stays put until this call is over."""
        handle.lends += 1
        self.lenders.append(handle)

    def finish(self) -> None:
        """The call returned: traps if a borrow it was given is still held; releases
        the handles it borrowed from."""
        for handle in self.lenders:
            handle.lends -= 1
        self.lenders.clear()
        if self.borrows:
            count, self.borrows = self.borrows, 0
            raise _trap(f"{count} borrowed handle(s) not dropped before the call returned")


Destructor = Callable[[int], None]


class HandleTable:
    """One instance's handles (resources today, waitables with WASI 0.3).

    ``defines`` holds the resource types the instance implements itself: a borrow of
    one of those is passed to it as the bare rep, as the specification says.
    ``destructors`` maps resource types to what runs when the last ``own`` handle of a
    rep is dropped (a host resource's drop, or the defining guest's destructor);
    ``aliases`` maps the instance's resource types that stand for others (its imports,
    in a composition) to the type their destructor is kept under.
    """

    MAX_LENGTH = (1 << 28) - 1

    __slots__ = ("_array", "_free", "aliases", "defines", "destructors")

    def __init__(self) -> None:
        self._array: list[object | None] = [None]
        self._free: list[int] = []
        self.defines: set[ResourceType] = set()
        self.destructors: dict[ResourceType, Destructor] = {}
        self.aliases: Mapping[ResourceType, ResourceType] = {}

    def __len__(self) -> int:
        """How many entries are live."""
        return len(self._array) - 1 - len(self._free)

    # -- generic entries ----------------------------------------------------------------

    def add(self, entry: object) -> int:
        """Store ``entry``; its index."""
        if self._free:
            i = self._free.pop()
            self._array[i] = entry
            return i
        i = len(self._array)
        if i > self.MAX_LENGTH:
            raise _trap("handle table is full")
        self._array.append(entry)
        return i

    def mark(self) -> tuple[int, list[int]]:
        """Where the table stands now, for :meth:`roll_back` (a copy of the free list
        and the array's length): what entries added after it are taken out."""
        return len(self._array), self._free[:]

    def roll_back(self, mark: tuple[int, list[int]]) -> None:
        """Take out every entry added since ``mark`` (with nothing removed since), as
        if they had never been added: their indices are free again, in the same
        order, so that the next ones are the indices they would have been. (Nothing is
        removed during a lowering: the instance's ``may_leave`` is clear while its
        ``realloc`` runs, so a drop or an import call there traps.)"""
        length, free = mark
        array = self._array
        for i in set(free).difference(self._free):
            array[i] = None
        del array[length:]
        self._free[:] = free

    def get(self, i: int) -> object:
        """The entry at ``i``; traps if there is none."""
        if not 0 < i < len(self._array):
            raise _trap(f"handle index {i} does not exist")
        entry = self._array[i]
        if entry is None:
            raise _trap(f"handle index {i} does not exist (dropped)")
        return entry

    def remove(self, i: int) -> object:
        """Take the entry at ``i`` out; traps if there is none."""
        entry = self.get(i)
        self._array[i] = None
        self._free.append(i)
        return entry

    # -- resources ----------------------------------------------------------------------

    def resource(self, rt: ResourceType, i: int) -> ResourceHandle:
        """The resource handle at ``i``; traps unless it is one of type ``rt``."""
        entry = self.get(i)
        if type(entry) is not ResourceHandle:
            raise _trap(f"handle index {i} is not a resource")
        if entry.resource is not rt:
            raise _trap(
                f"handle index {i} is a {entry.resource.name}, not a {rt.name} "
                "(wrong resource type)"
            )
        return entry

    def lower_own(self, rt: ResourceType, rep: int) -> int:
        """Give the instance an ``own`` handle to ``rep``."""
        # (``ResourceHandle(rt, rep, True)`` without its ``__init__`` frame: every own a
        # host function returns, and every poll input's handle, comes here)
        handle = _new(ResourceHandle)
        handle.resource = rt
        handle.rep = rep
        handle.own = True
        handle.scope = None
        handle.lends = 0
        free = self._free
        if free:  # (:meth:`add`, inlined: every own a host function returns comes here)
            i = free.pop()
            self._array[i] = handle
            return i
        return self.add(handle)

    def lower_borrow(self, rt: ResourceType, rep: int, scope: CallScope) -> int:
        """Lend the instance ``rep`` for the call of ``scope``."""
        if rt in self.defines:
            return rep
        scope.borrows += 1
        return self.add(ResourceHandle(rt, rep, False, scope))

    def lift_own(self, rt: ResourceType, i: int) -> int:
        """Move the ``own`` handle at ``i`` out of the table; its rep."""
        array = self._array
        h = array[i] if 0 < i < len(array) else None
        if type(h) is not ResourceHandle or h.resource is not rt:
            h = self.resource(rt, i)  # the trap that says why
        if not h.own:
            raise _trap(f"handle index {i} is a borrow where an own was expected")
        if h.lends:
            raise _trap(f"handle index {i} is lent to a call and cannot move")
        array[i] = None
        self._free.append(i)
        return h.rep

    def lift_borrow(self, rt: ResourceType, i: int, scope: CallScope) -> int:
        """The rep behind ``i``, lent for the call of ``scope``."""
        array = self._array
        h = array[i] if 0 < i < len(array) else None
        if type(h) is not ResourceHandle or h.resource is not rt:
            h = self.resource(rt, i)  # the trap that says why
        h.lends += 1  # (:meth:`CallScope.lend`, inlined: every method call comes here)
        scope.lenders.append(h)
        return h.rep

    def resource_new(self, rt: ResourceType, rep: int) -> int:
        """``canon resource.new``: a new own handle for a rep the instance made."""
        return self.add(ResourceHandle(rt, rep, True))

    def resource_rep(self, rt: ResourceType, i: int) -> int:
        """``canon resource.rep``."""
        return self.resource(rt, i).rep

    def resource_drop(self, rt: ResourceType, i: int) -> None:
        """``canon resource.drop``: an own's destructor runs; a borrow ends early."""
        array = self._array
        h = array[i] if 0 < i < len(array) else None
        if type(h) is not ResourceHandle or h.resource is not rt:
            h = self.resource(rt, i)  # the trap that says why
        if h.lends:
            raise _trap(f"handle index {i} is lent to a call and cannot be dropped")
        self._array[i] = None
        self._free.append(i)
        if h.own:
            dtor = self.destructors.get(self.aliases.get(rt, rt))
            if dtor is not None:
                dtor(h.rep)
        else:
            assert h.scope is not None
            h.scope.borrows -= 1

    # -- WASI 0.3 ends ------------------------------------------------------------------

    def lift_end(self, value_type: object, i: int) -> AsyncEnd:
        """Move the readable stream or future end at ``i`` out of the table."""
        entry = self.get(i)
        if not isinstance(entry, AsyncEnd) or not entry.readable:
            raise _trap(f"handle index {i} is not a readable stream or future end")
        if entry.value_type != value_type:
            raise _trap(f"handle index {i} is an end of another stream or future type")
        if entry.busy:
            raise _trap(f"handle index {i} is being copied and cannot move")
        self.remove(i)
        return entry

    def lower_end(self, value_type: object, end: AsyncEnd) -> int:
        """Give the instance the readable end ``end``."""
        if not end.readable or end.value_type != value_type:
            raise TypeError("only a readable end of the same type can be lowered")
        return self.add(end)
