"""Telling clients that a block changed: resource update (and list) notifications for what they follow.

Blocks change in this process's workers, in other processes on the same
store, and through this server's own tools. The watch sees all of them the
same way: it reads the followed subjects' blocks and compares them with what
it saw before, at once after this server's own writes and run waits, and
every ``interval`` seconds otherwise. A subject's first reading is taken when
a client starts following it, so no change after a subscription is missed;
a notification says "read it again", so a rare extra one is harmless.

Two kinds of followers: sessions of the handshake protocol (up to
2025-11-25) that sent ``resources/subscribe`` or listed the resources, told
through their session; and ``subscriptions/listen`` streams (2026-07-28),
told through the SDK's subscription bus, which delivers each event to the
streams that asked for it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
from mcp.server.session import ServerSession
from mcp.server.subscriptions import ResourcesListChanged, ResourceUpdated, SubscriptionBus

from ..memory import AsyncMemory
from ._scope import Scope, block_uri, parse_block_uri

log = logging.getLogger(__name__)

_State = dict[str, tuple[str, str, int]]  # label -> (description, value, limit): what a block resource renders


@dataclass
class _Peer:
    """A handshake-era connection: its session (the back channel), the URIs it subscribed to, and if it listed."""

    session: ServerSession
    uris: set[str] = field(default_factory=set)
    lists: bool = False


class Watch:
    """Who follows which block URIs, what the followed subjects' blocks were, and the notifications when they change."""

    def __init__(self, memory: AsyncMemory, scope: Scope, bus: SubscriptionBus, interval: float) -> None:
        self._memory = memory
        self._scope = scope
        self._bus = bus
        self._interval = interval
        self._peers: dict[str, _Peer] = {}
        self._stream_uris: Counter[str] = Counter()  # URIs of open listen streams
        self._list_streams = 0  # open listen streams that asked for resource list changes
        self._seen: dict[str, _State] = {}
        self._lock = anyio.Lock()

    # -- followers -----------------------------------------------------------------------------------

    async def subscribe(self, peer_key: str, session: ServerSession, uri: str) -> None:
        subject, _ = parse_block_uri(uri)
        peer = self._peer(peer_key, session)
        peer.uris.add(uri)
        await self._first_reading([subject])

    def knows(self, peer_key: str) -> bool:
        return peer_key in self._peers

    def forget(self, peer_key: str) -> None:
        """A connection closed: drop what it followed."""
        if self._peers.pop(peer_key, None) is not None:
            log.info("MCP session %s closed: dropping its subscriptions", peer_key or "stdio")

    def unsubscribe(self, peer_key: str, uri: str) -> None:
        peer = self._peers.get(peer_key)
        if peer is not None:
            peer.uris.discard(uri)

    async def listed(self, peer_key: str, session: ServerSession) -> None:
        """A session listed the resources: it hears when the list changes (blocks created or deleted)."""
        self._peer(peer_key, session).lists = True
        await self._first_reading(self._scope.listed)

    @asynccontextmanager
    async def stream(self, uris: Iterable[str], lists: bool) -> AsyncIterator[None]:
        """Follow ``uris`` (and the list) while a listen stream is open."""
        followed = [u for u in uris if self._served(u) is not None]
        self._stream_uris.update(followed)
        self._list_streams += lists
        try:
            await self._first_reading(
                {parse_block_uri(u)[0] for u in followed} | set(self._scope.listed if lists else ())
            )
            yield
        finally:
            self._stream_uris.subtract(followed)
            self._stream_uris += Counter()  # drops the URIs no stream follows any more
            self._list_streams -= lists

    def _served(self, uri: str) -> str | None:
        """The subject of a block URI this server serves, else None (a listen stream may name anything)."""
        try:
            subject, _ = parse_block_uri(uri)
        except (TypeError, ValueError):
            return None
        return subject if self._scope.allows(subject) else None

    def _peer(self, key: str, session: ServerSession) -> _Peer:
        peer = self._peers.setdefault(key, _Peer(session))
        peer.session = session  # any request's session reaches the connection's back channel
        return peer

    def _watched(self) -> set[str]:
        uris = set(self._stream_uris) | {u for p in self._peers.values() for u in p.uris}
        subjects = {parse_block_uri(u)[0] for u in uris}
        if self._list_streams or any(p.lists for p in self._peers.values()):
            subjects.update(self._scope.listed)
        return subjects

    # -- readings ------------------------------------------------------------------------------------

    async def _state(self, subject: str) -> _State:
        return {b.label: (b.description, b.value, b.limit) for b in await self._memory.list_blocks(subject)}

    async def _first_reading(self, subjects: Iterable[str]) -> None:
        async with self._lock:
            for subject in subjects:
                if subject not in self._seen:
                    self._seen[subject] = await self._state(subject)

    async def refresh(self) -> None:
        """Read the followed subjects' blocks now and notify what changed since the last reading; never raises."""
        updated: list[str] = []
        list_changed = False
        async with self._lock:
            watched = self._watched()
            for subject in list(self._seen):
                if subject not in watched:  # nobody follows it: a later follower takes a fresh first reading
                    del self._seen[subject]
            for subject in watched:
                try:
                    new = await self._state(subject)
                except Exception:  # an engine failure must not fail the tool that asked; the next reading retries
                    log.warning("could not read the blocks of %r to notify changes", subject, exc_info=True)
                    continue
                old = self._seen.get(subject)
                self._seen[subject] = new
                if old is None:
                    continue
                updated += [
                    block_uri(subject, label)
                    for label in sorted(old.keys() | new.keys())
                    if old.get(label) != new.get(label)
                ]
                list_changed |= subject in self._scope.listed and old.keys() != new.keys()
        if updated or list_changed:
            await self._publish(updated, list_changed)

    async def _publish(self, updated: list[str], list_changed: bool) -> None:
        for uri in updated:
            await self._bus.publish(ResourceUpdated(uri=uri))
        if list_changed:
            await self._bus.publish(ResourcesListChanged())
        for key, peer in list(self._peers.items()):
            try:
                for uri in updated:
                    if uri in peer.uris:
                        await peer.session.send_resource_updated(uri)
                if list_changed and peer.lists:
                    await peer.session.send_resource_list_changed()
            except Exception as exc:  # the connection is gone: forget it
                log.info("dropping the subscriptions of closed MCP session %s: %r", key or "stdio", exc)
                self._peers.pop(key, None)

    async def run(self) -> None:
        """Refresh every ``interval`` seconds until cancelled (a failed reading is logged and retried)."""
        while True:
            await anyio.sleep(self._interval)
            await self.refresh()
