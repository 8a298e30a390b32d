"""Every public method of a store class under the fork gate, with the backend's errors as ``StoreError``.

Shared by the SQL backends: a class decorated with ``guarded`` has a ``db``
attribute with ``errors`` (the driver's exception types) and
``store_error(exc)`` (the ``StoreError`` naming the store: its file, or its URL
with the password masked). Every store call goes through here, so it is
written for speed: try/except, no generator-based context manager.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .._fork import gate

_C = TypeVar("_C", bound=type)
_F = TypeVar("_F", bound=Callable[..., Any])


def waits(fn: _F) -> _F:
    """Mark a method that runs outside the fork gate: it sleeps (``wait_for_run``: a fork must not wait for it),
    or it enters the gate itself around its driver calls (a cache hit makes none)."""
    fn.__waits__ = True  # type: ignore[attr-defined]
    return fn


def guarded(cls: _C) -> _C:
    """Run every public method of ``cls`` under the fork gate, with driver errors as ``StoreError``.

    Methods marked ``waits`` only translate errors: a fork must not wait for a sleeping thread.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if getattr(fn, "__waits__", False):

            @functools.wraps(fn)
            def outside(self: Any, *args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(self, *args, **kwargs)
                except self.db.errors as exc:
                    raise self.db.store_error(exc) from exc

            return outside

        @functools.wraps(fn)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                with gate:
                    return fn(self, *args, **kwargs)
            except self.db.errors as exc:
                raise self.db.store_error(exc) from exc

        return method

    for name, fn in list(vars(cls).items()):
        if not name.startswith("_") and callable(fn) and not isinstance(fn, (staticmethod, classmethod, type)):
            setattr(cls, name, wrap(fn))
    return cls
