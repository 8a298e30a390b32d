"""The MCP server of ``ai-memory mcp``: one ``AsyncMemory`` as tools, block resources and a prompt, over stdio or HTTP.

Built on the SDK's low-level ``Server``: the resources are the subjects'
blocks, listed and read from the store on each request, and resource
subscriptions are served for both protocol eras (``resources/subscribe``
and ``subscriptions/listen``), fed by the ``Watch``.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import anyio
import anyio.abc
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.models import InitializationOptions
from mcp.server.stdio import stdio_server
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    EmptyResult,
    GetPromptRequestParams,
    GetPromptResult,
    ListPromptsResult,
    ListResourcesResult,
    ListResourceTemplatesResult,
    ListToolsResult,
    PaginatedRequestParams,
    ReadResourceRequestParams,
    ReadResourceResult,
    SubscribeRequestParams,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    UnsubscribeRequestParams,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from .. import __version__
from ..memory import AsyncMemory
from . import _prompts, _resources
from ._scope import Scope, block_uri
from ._tools import Toolbox
from ._watch import Watch

log = logging.getLogger(__name__)

WATCH_INTERVAL = 1.0  # seconds between readings of the followed blocks (changes made by other processes)
_Ctx = ServerRequestContext[Any, Any]


class _Server(Server[Any]):
    """``Server`` that announces resource list changes on every transport (HTTP builds its own options)."""

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or NotificationOptions(resources_changed=True), experimental_capabilities, extensions
        )


class MemoryServer:
    """The memory of one subject (or of any, ``Scope.multi``) as an MCP server; ``serve_stdio`` or ``serve_http``.

    The caller owns ``memory`` (opens and closes it); the server never
    closes it, so runs queued by its tools are learned by its workers until
    the caller closes it.
    """

    def __init__(self, memory: AsyncMemory, scope: Scope, *, watch_interval: float = WATCH_INTERVAL) -> None:
        self.memory = memory
        self.scope = scope
        bus = InMemorySubscriptionBus()
        self.watch = Watch(memory, scope, bus, watch_interval)
        self.tools = Toolbox(memory, scope, self.watch)
        self._listen = ListenHandler(bus)
        self.server = _Server(
            "ai-memory",
            version=__version__,
            title="ai-memory: long-term memory",
            instructions=_instructions(scope),
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            on_subscribe_resource=self._subscribe,
            on_unsubscribe_resource=self._unsubscribe,
            on_subscriptions_listen=self._listen_stream,
            on_list_prompts=self._list_prompts,
            on_get_prompt=self._get_prompt,
        )

    # -- transports ----------------------------------------------------------------------------------

    async def serve_stdio(self) -> None:
        """Serve one client over stdin/stdout until it closes stdin (or SIGTERM); stdout carries only the protocol.

        While serving, the SDK points file descriptor 1 at stderr, so stray
        output of any library cannot corrupt the protocol.
        """
        async with anyio.create_task_group() as tg:
            await tg.start(_stop_on_sigterm, tg.cancel_scope.cancel)
            tg.start_soon(self.watch.run)
            async with stdio_server() as (read, write):
                await self.server.run(read, write, self.server.create_initialization_options())
            tg.cancel_scope.cancel()

    async def serve_http(self, host: str, port: int, on_ready: Callable[[str], None] | None = None) -> None:
        """Serve streamable HTTP at ``http://host:port/mcp`` until SIGTERM or Ctrl-C; ``on_ready`` gets the URL.

        ``port`` 0 picks a free port. On a loopback host the SDK refuses
        requests whose ``Host`` or ``Origin`` is not local (DNS rebinding).
        """
        import uvicorn

        app = self.server.streamable_http_app(host=host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
        except OSError as exc:
            sock.close()
            raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        bound = sock.getsockname()[1]
        web = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))

        def stop() -> None:
            web.should_exit = True

        async with anyio.create_task_group() as tg:
            # Before uvicorn's own handler: after its graceful exit it re-raises SIGTERM into this one, not the default.
            await tg.start(_stop_on_sigterm, stop)
            tg.start_soon(self.watch.run)
            url = f"http://{host if family == socket.AF_INET else f'[{host}]'}:{bound}/mcp"
            if on_ready is not None:
                on_ready(url)
            await web.serve(sockets=[sock])
            tg.cancel_scope.cancel()

    # -- handlers ------------------------------------------------------------------------------------

    async def _list_tools(self, ctx: _Ctx, params: PaginatedRequestParams | None) -> ListToolsResult:
        return ListToolsResult(tools=self.tools.tools())

    async def _call_tool(self, ctx: _Ctx, params: CallToolRequestParams) -> CallToolResult:
        return await self.tools.call(params.name, params.arguments)

    def _peer(self, ctx: _Ctx) -> str:
        """The key of the request's connection in the watch; a new one is forgotten when its connection closes."""
        key = _peer_key(ctx)
        if not self.watch.knows(key):
            # The request context does not expose the connection yet (mcp 2.3); its exit stack is where the SDK
            # wants per-connection cleanup. Without it, a closed connection is forgotten at its first failed send.
            stack = getattr(getattr(ctx.session, "_connection", None), "exit_stack", None)
            if isinstance(stack, AsyncExitStack):
                stack.callback(self.watch.forget, key)
        return key

    async def _list_resources(self, ctx: _Ctx, params: PaginatedRequestParams | None) -> ListResourcesResult:
        if ctx.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS:  # 2026 clients hear list changes on a listen stream
            await self.watch.listed(self._peer(ctx), ctx.session)
        return ListResourcesResult(resources=await _resources.list_blocks(self.memory, self.scope))

    async def _list_resource_templates(
        self, ctx: _Ctx, params: PaginatedRequestParams | None
    ) -> ListResourceTemplatesResult:
        return ListResourceTemplatesResult(resource_templates=_resources.templates(self.scope))

    async def _read_resource(self, ctx: _Ctx, params: ReadResourceRequestParams) -> ReadResourceResult:
        return await _resources.read(self.memory, self.scope, params.uri)

    async def _subscribe(self, ctx: _Ctx, params: SubscribeRequestParams) -> EmptyResult:
        _resources.served(self.scope, params.uri)
        await self.watch.subscribe(self._peer(ctx), ctx.session, params.uri)
        return EmptyResult()

    async def _unsubscribe(self, ctx: _Ctx, params: UnsubscribeRequestParams) -> EmptyResult:
        self.watch.unsubscribe(_peer_key(ctx), params.uri)
        return EmptyResult()

    async def _listen_stream(self, ctx: _Ctx, params: SubscriptionsListenRequestParams) -> SubscriptionsListenResult:
        wanted = params.notifications
        async with self.watch.stream(wanted.resource_subscriptions or (), bool(wanted.resources_list_changed)):
            return await self._listen(ctx, params)

    async def _list_prompts(self, ctx: _Ctx, params: PaginatedRequestParams | None) -> ListPromptsResult:
        return ListPromptsResult(prompts=_prompts.prompts(self.scope))

    async def _get_prompt(self, ctx: _Ctx, params: GetPromptRequestParams) -> GetPromptResult:
        return await _prompts.render(self.memory, self.scope, params.name, params.arguments)


def _peer_key(ctx: _Ctx) -> str:
    """The connection a request came on: its HTTP session id, or "" for the one stdio connection."""
    headers = getattr(ctx.request, "headers", None)
    return str(headers.get("mcp-session-id", "")) if headers is not None else ""


async def _stop_on_sigterm(stop: Callable[[], None], *, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Call ``stop`` on SIGTERM (how MCP clients end a server that did not exit on EOF), so the memory is closed."""
    if sys.platform == "win32" or not _in_main_thread():
        task_status.started()
        return
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            log.info("SIGTERM: stopping the MCP server")
            stop()


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _instructions(scope: Scope) -> str:
    """What the client's model is told about this server (``instructions`` of the handshake)."""
    if scope.multi:
        whose = "of several users; every tool takes subject_id, the id of the user you are talking to"
        attach = "the memory://<subject>/<label> resources"
    else:
        whose = f"of the user {scope.default!r}"
        attach = f"the {block_uri(str(scope.default), 'human')} resource"
    return (
        f"Long-term memory {whose}, learned from conversations in the background. At the start of a conversation "
        f"call get_context (or attach {attach}) to know who you are talking to. When the user shares something "
        "worth keeping (facts about themselves, preferences, plans, decisions), call add_messages with those "
        "messages or a note in their words. Use search_passages for details of earlier conversations that the "
        "memory blocks do not hold."
    )
