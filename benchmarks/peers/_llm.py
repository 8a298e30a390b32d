"""The one scripted OpenAI-compatible endpoint every system of ``vs_peers.py`` talks to.

Fixed latency per chat call (``ScriptedOpenAI(latency=...)``), answers in each
system's own format, picked from the request's shape:

- a request offering ``memory_finish_edits`` (Letta's sleeptime agent, and
  this package's ``llm`` learner, whose tools share those names) is answered
  by ``SleeptimeResponder``: first-person facts of the newest batch go into
  ``human``, then ``memory_finish_edits``;
- mem0's ADD-only extraction call (``response_format`` ``json_object``, a
  ``## New Messages`` section) gets ``{"memory": [{"text": ..., "attributed_to": "user"}]}``
  with the same facts, one memory each.

Its ``/embeddings`` answers MiniLM-L6 vectors (the packaged model), so the
Letta server embeds with the very model the in-process systems load.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from typing import Any

from support.letta_server import SleeptimeResponder, extract_facts
from support.openai_server import ScriptedOpenAI, reply

_NEW_MESSAGES = re.compile(r"## New Messages\n(.*?)\n\n## ", re.S)


def is_mem0_extraction(req: dict[str, Any]) -> bool:
    """mem0 2.2's one LLM call per ``add``: JSON mode and its ``## New Messages`` section."""
    if (req.get("response_format") or {}).get("type") != "json_object":
        return False
    return any("## New Messages" in str(m.get("content")) for m in req.get("messages") or [])


def mem0_memories(req: dict[str, Any]) -> list[dict[str, str]]:
    """The memories a fact-extracting model would return for the request's new messages."""
    text = "\n".join(str(m.get("content")) for m in req.get("messages") or [] if m.get("role") == "user")
    match = _NEW_MESSAGES.search(text)
    return [{"text": fact, "attributed_to": "user"} for fact in extract_facts(match.group(1) if match else "")]


class PeersResponder:
    """Answers each system in its own format (see the module docstring); anything else gets the default reply."""

    def __init__(self) -> None:
        self.sleeptime = SleeptimeResponder()

    def __call__(self, req: dict[str, Any]) -> Any:
        tools = {(t.get("function") or {}).get("name") for t in req.get("tools") or []}
        if "memory_finish_edits" in tools:
            return self.sleeptime(req)
        if is_mem0_extraction(req):
            return reply(json.dumps({"memory": mem0_memories(req)}))
        return None


class MiniLMEndpoint(ScriptedOpenAI):
    """The scripted endpoint with MiniLM-L6 embeddings (loaded from ``model_path`` on first use)."""

    def __init__(self, model_path: str, **kwargs: Any) -> None:
        super().__init__(embedding_dim=384, **kwargs)
        self._model_path = model_path
        self._minilm: Any = None
        self._lock = threading.Lock()

    def embed_many(self, texts: Sequence[str], dim: int) -> list[list[float]]:
        with self._lock:
            if self._minilm is None:
                from sentence_transformers import SentenceTransformer

                self._minilm = SentenceTransformer(self._model_path, device="cpu")
            vectors = self._minilm.encode(list(texts), convert_to_numpy=True)
        return [[float(x) for x in v] for v in vectors]
