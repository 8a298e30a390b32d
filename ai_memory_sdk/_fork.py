"""Fork safety: what a child inherits from a parent that has worker threads.

``os.fork()`` copies only the calling thread. A lock another thread held at
that instant stays held forever in the child; SQLite's global mutexes (its
allocator, its per-file lock tables) are such locks, and they are taken by any
thread inside any SQLite call; OpenSSL's (a TLS handshake, CA certificates
loaded for a new client), an HTTP client's, torch's and even Python 3.11's
``cached_property`` lock are others. So every call of this package into SQLite,
an HTTP API or a local model runs under :data:`gate`, and a fork waits until
no thread is inside one (at most one call per thread: retry sleeps and idle
waits are outside). Keep-alive sockets are inherited too: a child that reused
them would read its parent's responses, so a client is :class:`PerProcess`
(or, for Letta, one per pid). Python's per-module import locks are the last
trap: what a worker thread imports, the engine imports first, in the thread
that builds it.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ForkGate:
    """A re-entrant shared gate: any number of threads inside, none while a fork happens.

    ``with gate:`` around SQLite work; ``os.fork()`` (through ``register_at_fork``)
    waits for every thread to leave and keeps new ones out until the fork is done.
    A thread already inside re-enters freely, so nested store calls cannot deadlock
    against a waiting fork.
    """

    def __init__(self) -> None:
        self._reset(inside=0)

    def _reset(self, inside: int) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._active = inside
        self._forking = False
        self._local = threading.local()

    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    # Every store call enters the gate, so the way in and out is written for speed: the bare lock's C
    # ``with`` (not the condition's Python one), attributes read once; the condition only when a fork waits.
    def __enter__(self) -> ForkGate:
        local = self._local
        depth = getattr(local, "depth", 0)
        if depth == 0:
            with self._lock:
                while self._forking:
                    self._cond.wait()
                self._active += 1
        local.depth = depth + 1
        return self

    def __exit__(self, *exc: object) -> None:
        local = self._local
        depth = local.depth - 1
        local.depth = depth
        if depth == 0:
            with self._lock:
                self._active -= 1
                if self._forking:  # the fork waits for this (or for all but its own thread)
                    self._cond.notify_all()

    # -- the three os.register_at_fork hooks -----------------------------------------------------

    def before_fork(self) -> None:
        own = 1 if self._depth() else 0  # a fork from inside the gate waits only for the other threads
        with self._cond:
            while self._forking:  # another thread's fork is in progress
                self._cond.wait()
            self._forking = True
            while self._active > own:
                self._cond.wait()

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        depth = self._depth()  # the forking thread is the child's only thread
        self._reset(inside=1 if depth else 0)
        self._local.depth = depth


class _Pid:
    """This process's id, kept current by a fork hook: ``PerProcess.get`` runs on every store call, a syscall does not."""

    value = os.getpid()

    @classmethod
    def forked(cls) -> None:
        cls.value = os.getpid()


gate = ForkGate()
if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_Pid.forked)  # first: the child's other hooks may build per-process objects
    os.register_at_fork(
        before=gate.before_fork, after_in_parent=gate.after_fork_in_parent, after_in_child=gate.after_fork_in_child
    )

# Objects a child inherited and must never touch: closing or finalising them would run SQLite code
# on its parent's connection state. They are kept referenced, so the garbage collector never does.
inherited: list[Any] = []


class Gated:
    """A proxy of a shared client whose every method call runs under the gate (``client.a.b.call()``)."""

    __slots__ = ("_target",)

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        with gate:  # a namespace may be a cached_property that imports on first use
            value = getattr(self._target, name)
        if callable(value):

            @functools.wraps(value)
            def gated(*args: Any, **kwargs: Any) -> Any:
                with gate:
                    return value(*args, **kwargs)

            return gated
        if isinstance(value, (str, bytes, int, float, bool, type(None))):
            return value
        return Gated(value)  # a resource namespace (client.agents): its methods are gated too


class PerProcess(Generic[T]):
    """A lazily built object that a forked child builds anew instead of sharing (an HTTP client)."""

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._pid = 0
        self._lock = threading.Lock()  # only taken inside the gate, so never held across a fork

    def get(self) -> T:
        pid = _Pid.value
        value = self._value
        if value is None or self._pid != pid:
            # Built once however many threads ask at once (four workers' first passes would each load CA
            # certificates for a client of their own). Inside the gate: a fork waits for the build and the lock.
            with gate, self._lock:  # building a client loads CA certificates: OpenSSL's locks, like SQLite's
                value = self._value
                if value is None or self._pid != pid:
                    if value is not None:
                        inherited.append(value)  # its sockets belong to the parent: never closed from here
                    value = self._factory()
                    self._value, self._pid = value, pid
        return value
