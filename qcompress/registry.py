"""Named kinds that plug in (heads, similarities): a name -> class table whose classes are imported on first use.

The built-in kinds are listed as "module:Class" strings, so that asking which names exist (the command line's
choices, `--help`) imports no torch; `get` imports a kind's module when it is first asked for and keeps one
instance. `register` adds a kind defined elsewhere (a plugin, a test) under its class attribute `name`.

Example:
    >>> colours = Registry("colour", {})
    >>> @colours.register
    ... class Red:
    ...     name = "red"
    >>> colours.names(), type(colours.get("red")).__name__, colours.problem("blue")
    (('red',), 'Red', "unknown colour 'blue'; choose one of red")
"""

from __future__ import annotations

import importlib
from typing import Generic, Mapping, TypeVar

from qcompress.errors import InputError

__all__ = ["Registry"]

Kind = TypeVar("Kind")


class Registry(Generic[Kind]):
    """Kinds of one thing (`what`: "head", "similarity"), by name, in registration order."""

    def __init__(self, what: str, built_in: Mapping[str, str]) -> None:
        self.what = what
        self._where: dict[str, str | type] = dict(built_in)
        self._instances: dict[str, Kind] = {}

    def names(self) -> tuple[str, ...]:
        return tuple(self._where)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._where

    def problem(self, name: object) -> str | None:
        """Why `name` is not a registered kind (the message), or None when it is one."""
        if name in self:
            return None
        return f"unknown {self.what} {name!r}; choose one of {', '.join(self._where)}"

    def get(self, name: str) -> Kind:
        """The kind registered as `name` (one instance per name); ValueError names the choices."""
        problem = self.problem(name)
        if problem is not None:
            raise InputError(problem)
        if name not in self._instances:
            where = self._where[name]
            if isinstance(where, str):
                module, _, attribute = where.partition(":")
                where = getattr(importlib.import_module(module), attribute)
            self._instances[name] = where()
        return self._instances[name]

    def register(self, cls: type) -> type:
        """Add the kind `cls` under `cls.name` (usable as a class decorator); a name already taken is refused."""
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.what} class needs a non-empty `name`, got {name!r}")
        if name in self._where:
            raise ValueError(f"a {self.what} named {name!r} is already registered")
        self._where[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Remove a kind added by `register` (built-in kinds stay)."""
        if not isinstance(self._where.get(name), type):
            raise ValueError(f"{name!r} is not a {self.what} added by register")
        del self._where[name]
        self._instances.pop(name, None)
