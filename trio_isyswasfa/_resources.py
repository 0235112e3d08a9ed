"""Handle tables: what the integer reps in guest handles stand for."""

from __future__ import annotations

from typing import Any, TypeVar

from ._errors import GuestProtocolError, GuestTrap

T = TypeVar("T")


class HandleTable:
    """Objects behind host resources, keyed by rep (shared by every resource type)."""

    def __init__(self, limit: int | None = None) -> None:
        self._items: dict[int, Any] = {}
        self._next = 1
        self._limit = limit

    def add(self, obj: Any) -> int:
        """Store ``obj`` and return its new rep (:class:`GuestTrap` beyond the limit)."""
        if self._limit is not None and len(self._items) >= self._limit:
            close = getattr(obj, "close", None)
            if close is not None:
                close()  # it will never reach the guest
            raise GuestTrap(
                f"the guest holds {self._limit} WASI handles at once (Limits.max_handles)"
            )
        rep = self._next
        self._next += 1
        self._items[rep] = obj
        return rep

    def get(self, rep: int, cls: type[T]) -> T:
        """The object behind ``rep``, which must be a ``cls``."""
        obj = self._items.get(rep)
        if not isinstance(obj, cls):
            raise GuestProtocolError(f"handle {rep} is not a live {cls.__name__}")
        return obj

    def take(self, rep: int, cls: type[T]) -> T:
        """Forget ``rep``, which must stand for a ``cls``, and return it (``get`` and
        ``remove`` in one call; the check is ``get``'s)."""
        obj = self.get(rep, cls)
        del self._items[rep]
        return obj

    def remove(self, rep: int) -> Any:
        """Forget ``rep`` (its guest handle was dropped); return what it held."""
        return self._items.pop(rep, None)

    def clear(self) -> list[Any]:
        """Forget every rep; return what they held."""
        items = list(self._items.values())
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)

    def counts(self) -> dict[str, int]:
        """Live objects by class name."""
        out: dict[str, int] = {}
        for obj in self._items.values():
            name = type(obj).__name__
            out[name] = out.get(name, 0) + 1
        return out
