"""The ``openai`` client of the memory agent and of ``openai:`` embeddings, built from the settings."""

from __future__ import annotations

from typing import Any

from .config import Settings


def openai_client(settings: Settings) -> Any:
    """A client for the configured endpoint; its own retries are off (ours honour a per-pass budget)."""
    from openai import OpenAI

    return OpenAI(
        api_key=settings.llm_api_key or "not-needed",
        base_url=settings.llm_base_url,
        timeout=settings.llm_timeout,
        max_retries=0,
    )
