"""What the engine-neutral scenarios share: a short conversation and subject ids no other test uses."""

from __future__ import annotations

import uuid
from typing import Any

CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Hi my name is Bob"},
    {"role": "assistant", "content": "Hi Bob, how can I help you today?"},
    {"role": "user", "content": "I love cats"},
]


def unique_id(prefix: str = "user") -> str:
    """A subject id no other test uses (engines with a shared server keep state across tests)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"
