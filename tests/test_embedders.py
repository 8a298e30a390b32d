"""An embeddings endpoint without the model fails at once with EmbedderModelMissing; ``auto``'s fallback."""

from __future__ import annotations

import time

import openai
import pytest
from support.openai_server import ScriptedOpenAI, fail

from ai_memory_sdk.search import embedders
from ai_memory_sdk.search.embedders import (
    EmbedderError,
    EmbedderModelMissing,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    fallback_embedder,
    make_embedder,
)


def _embedder(server: ScriptedOpenAI, model: str = "nomic-embed-text") -> OpenAIEmbedder:
    return OpenAIEmbedder(
        model, lambda: openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0), retry_budget=30
    )


@pytest.mark.parametrize(
    "answer",
    [
        fail(
            404, body={"error": {"message": "The model `nomic-embed-text` does not exist", "code": "model_not_found"}}
        ),
        fail(404, body={"error": 'model "nomic-embed-text" not found, try pulling it first'}),  # Ollama's body
        fail(400, body={"error": {"message": "model 'nomic-embed-text' not found", "type": "invalid_request_error"}}),
    ],
    ids=["openai-404", "ollama-404", "400-model-not-found"],
)
def test_a_missing_model_raises_at_once_naming_model_and_url(openai_server: ScriptedOpenAI, answer, caplog) -> None:
    openai_server.script_embeddings(answer)
    started = time.monotonic()
    with pytest.raises(EmbedderModelMissing) as err:
        _embedder(openai_server).embed(["hello"])
    assert time.monotonic() - started < 2 and len(openai_server.embedding_requests) == 1  # not retried
    exc = err.value
    assert exc.model == "nomic-embed-text" and exc.url == openai_server.base_url
    assert str(exc).startswith(
        f"embedder openai:nomic-embed-text: the endpoint {openai_server.base_url} has no embedding model"
        " 'nomic-embed-text' (HTTP"
    )
    assert "not" in str(exc).split("(HTTP", 1)[1]  # the server's own words follow
    assert isinstance(exc, EmbedderError) and not caplog.records  # nothing to warn about: it was not retried


def test_another_client_error_is_an_embedder_error_naming_the_url(openai_server: ScriptedOpenAI) -> None:
    openai_server.script_embeddings(fail(401))
    with pytest.raises(EmbedderError) as err:
        _embedder(openai_server).embed(["hello"])
    assert not isinstance(err.value, EmbedderModelMissing) and len(openai_server.embedding_requests) == 1
    assert str(err.value) == (
        f"embedder openai:nomic-embed-text at {openai_server.base_url}: HTTP 401: Scripted error 401"
    )


def test_fallback_is_the_packaged_minilm_when_installed() -> None:
    if not embedders.local_model_available():
        pytest.skip("the local extra (sentence-transformers and the packaged MiniLM) is not installed")
    chosen = fallback_embedder()
    assert isinstance(chosen, SentenceTransformerEmbedder)
    assert chosen.name == "sentence-transformers:all-MiniLM-L6-v2"
    same = make_embedder("auto", recorded=None, llm_configured=False, openai_client=None)  # auto without an LLM
    assert same is not None and same.name == chosen.name


def test_fallback_is_lexical_search_without_the_local_extra(monkeypatch) -> None:
    # Uninstalling the extra cannot happen inside a test run: hide the package instead.
    real = embedders.importlib.util.find_spec
    monkeypatch.setattr(
        embedders.importlib.util, "find_spec", lambda name, *a: None if name == "sentence_transformers" else real(name)
    )
    assert fallback_embedder() is None
    assert make_embedder("auto", recorded=None, llm_configured=False, openai_client=None) is None
