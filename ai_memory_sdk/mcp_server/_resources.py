"""Blocks as resources: ``memory://<subject>/<label>``, so a client can attach the memory to a chat without a tool."""

from __future__ import annotations

from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, ReadResourceResult, Resource, ResourceTemplate, TextResourceContents

from ..memory import AsyncMemory
from ._scope import SCHEME, Scope, block_uri, parse_block_uri

MIME_TYPE = "text/plain"  # the block as get_context renders it: <label description="...">value</label>


async def list_blocks(memory: AsyncMemory, scope: Scope) -> list[Resource]:
    """The blocks of the listed subjects (the default one); a multi-subject server reads others by URI."""
    return [
        Resource(
            uri=block_uri(subject, b.label),
            name=b.label,
            title=f"{subject}'s {b.label} memory",
            description=b.description,
            mime_type=MIME_TYPE,
        )
        for subject in scope.listed
        for b in await memory.list_blocks(subject)
    ]


def templates(scope: Scope) -> list[ResourceTemplate]:
    if not scope.multi:
        return []
    return [
        ResourceTemplate(
            uri_template=SCHEME + "{subject_id}/{label}",
            name="memory block",
            title="A memory block of any subject",
            description="One memory block of a subject (its id percent-encoded), e.g. memory://kai/human.",
            mime_type=MIME_TYPE,
        )
    ]


def served(scope: Scope, uri: str) -> tuple[str, str]:
    """``(subject, label)`` of a URI this server serves; an ``INVALID_PARAMS`` error naming what is wrong otherwise."""
    try:
        subject, label = parse_block_uri(uri)
    except (TypeError, ValueError) as exc:
        raise MCPError(code=INVALID_PARAMS, message=str(exc), data={"uri": uri}) from None
    if not scope.allows(subject):
        raise MCPError(code=INVALID_PARAMS, message=f"no such resource: {uri}", data={"uri": uri})
    return subject, label


async def read(memory: AsyncMemory, scope: Scope, uri: str) -> ReadResourceResult:
    subject, label = served(scope, uri)
    text = await memory.get_memory(label, prompt_formatted=True, subject_id=subject)
    if text is None:
        raise MCPError(code=INVALID_PARAMS, message=f"subject {subject!r} has no block {label!r}", data={"uri": uri})
    return ReadResourceResult(contents=[TextResourceContents(uri=uri, mime_type=MIME_TYPE, text=text)])
