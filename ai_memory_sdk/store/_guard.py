"""Every public method of a store class under the fork gate, with the backend's errors as ``StoreError``.

Shared by the SQL backends: a class decorated with ``guarded`` has a ``db``
attribute whose ``translated()`` is a context manager that turns the
driver's exceptions into ``StoreError`` naming the store (its file, or its
URL with the password masked).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from .._fork import gate

_C = TypeVar("_C", bound=type)
_F = TypeVar("_F", bound=Callable[..., Any])


def waits(fn: _F) -> _F:
    """Mark a method that sleeps (``wait_for_run``): ``guarded`` leaves it outside the fork gate."""
    fn.__waits__ = True  # type: ignore[attr-defined]
    return fn


def guarded(cls: _C) -> _C:
    """Run every public method of ``cls`` under the fork gate, with driver errors as ``StoreError``.

    Methods marked ``waits`` only translate errors: a fork must not wait for a sleeping thread.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        if getattr(fn, "__waits__", False):

            @functools.wraps(fn)
            def waiting(self: Any, *args: Any, **kwargs: Any) -> Any:
                with self.db.translated():
                    return fn(self, *args, **kwargs)

            return waiting

        @functools.wraps(fn)
        def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            with gate, self.db.translated():
                return fn(self, *args, **kwargs)

        return method

    for name, fn in list(vars(cls).items()):
        if not name.startswith("_") and callable(fn) and not isinstance(fn, (staticmethod, classmethod, type)):
            setattr(cls, name, wrap(fn))
    return cls
