"""A tiny name → class registry used for every pluggable part (tokenizers, engines, rewards, losses)."""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes or factories; unknown names fail listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@REG.register("name")``."""

        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            if isinstance(obj, type):
                obj.registry_name = name  # type: ignore[attr-defined]  (what saved state records)
            return obj

        return deco

    def unregister(self, name: str) -> None:
        """Remove ``name`` (a plug-in that is unloaded, or a test's toy entry)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        """Return the entry called ``name`` or raise a KeyError naming the choices."""
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; expected one of {sorted(self._items)}"
            ) from None

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
