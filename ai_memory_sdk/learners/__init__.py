"""Learners: blocks and new messages in, edits out (see ``base``)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .base import Learner, PassInput, PassOutput, split_for_passes
from .offline import OfflineLearner

if TYPE_CHECKING:  # pragma: no cover
    from ..config import Settings

log = logging.getLogger(__name__)
_warned_offline = False


def make_learner(settings: Settings) -> Learner:
    """Resolve ``AI_MEMORY_LEARNER`` (``auto``: ``llm`` when an LLM key or base URL is configured)."""
    global _warned_offline
    choice = settings.learner
    if choice == "auto":
        choice = "llm" if settings.llm_configured else "offline"
        if choice == "offline" and not _warned_offline:
            _warned_offline = True
            log.warning(
                "no LLM configured: using the offline rule-based learner. Set OPENAI_API_KEY (or"
                " OPENAI_BASE_URL for Ollama/vLLM/llama.cpp) or pass llm_api_key=/llm_base_url= to"
                " Memory() for the LLM memory agent."
            )
    if choice == "llm":
        from .llm import LLMLearner

        learner: Learner = LLMLearner(settings)
        log.info(
            "learner: llm (model %s, base URL %s)",
            settings.model,
            settings.llm_base_url or "the openai client's default",
        )
        return learner
    log.info("learner: offline")
    return OfflineLearner()


__all__ = ["Learner", "OfflineLearner", "PassInput", "PassOutput", "make_learner", "split_for_passes"]
