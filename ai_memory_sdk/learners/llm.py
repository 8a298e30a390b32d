"""The LLM memory agent (SPEC §7): a sleeptime pass over any OpenAI-compatible endpoint."""

from __future__ import annotations

from typing import Any

from ..config import Settings


def openai_client(settings: Settings) -> Any:
    """The ``openai`` client for the memory agent and ``openai:`` embeddings (retries are ours, not its)."""
    from openai import OpenAI

    return OpenAI(api_key=settings.llm_api_key or "not-needed", base_url=settings.llm_base_url,
                  timeout=settings.llm_timeout, max_retries=0)
