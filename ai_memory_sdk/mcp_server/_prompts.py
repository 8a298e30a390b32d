"""The prompt "Start with my memory": the subject's memory, rendered for the start of a chat (the system prompt)."""

from __future__ import annotations

from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, GetPromptResult, Prompt, PromptArgument, PromptMessage, TextContent

from ..memory import AsyncMemory
from ._scope import Scope

NAME = "start_with_memory"
_TITLE = "Start with my memory"
_ABOUT = "What is remembered about you, put at the start of the conversation (as for a system prompt)."
_HEAD = (
    "Below is what you remember about me from earlier conversations: the memory blocks my long-term memory keeps. "
    "Use them as background to personalise your answers, without reciting them. When I tell you something worth "
    "keeping, remember it with the add_messages tool."
)
_EMPTY = (
    "You have no memory of me yet. When I tell you something worth keeping across conversations, remember it with "
    "the add_messages tool."
)


def prompts(scope: Scope) -> list[Prompt]:
    arguments = None
    if scope.multi:
        arguments = [
            PromptArgument(
                name="subject_id",
                description="Whose memory (a user id)" + (f"; default {scope.default}" if scope.default else ""),
                required=scope.default is None,
            )
        ]
    return [Prompt(name=NAME, title=_TITLE, description=_ABOUT, arguments=arguments)]


async def render(memory: AsyncMemory, scope: Scope, name: str, arguments: dict[str, str] | None) -> GetPromptResult:
    if name != NAME:
        raise MCPError(code=INVALID_PARAMS, message=f"unknown prompt {name!r}; the prompt is {NAME}")
    try:
        subject = scope.subject((arguments or {}).get("subject_id") if scope.multi else None)
    except (TypeError, ValueError, LookupError) as exc:
        raise MCPError(code=INVALID_PARAMS, message=str(exc)) from None
    context = await memory.get_context(subject)
    text = f"{_HEAD}\n\n{context}" if context else _EMPTY
    return GetPromptResult(
        description=_ABOUT, messages=[PromptMessage(role="user", content=TextContent(type="text", text=text))]
    )
