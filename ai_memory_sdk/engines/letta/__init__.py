"""The ``letta`` engine: memory on a Letta server (see ``engine``).

``engine`` holds ``LettaEngine``; ``lanes`` sends each subject's batches one
Letta run at a time; ``wire`` is the format shared with ai-memory-sdk 0.2.0
and the server; ``journal`` keeps accepted batches until they are learned.
"""

from .engine import LettaEngine
from .wire import SDK_TAG, agent_name

__all__ = ["SDK_TAG", "LettaEngine", "agent_name"]
