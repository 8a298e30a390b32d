"""The letta engine's subject listing and creation protocol against the real Letta 0.11.7 server.

``list_subjects``/``count_subjects`` read the agents tagged ``ai-memory-sdk``
(0.2.0's and this package's); ``create_subject`` raises ``SubjectExistsError``.
Marker ``letta``: ``pytest -m letta tests/test_letta_subjects.py``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from letta_client import NotFoundError
from support.letta_server import LettaServer

from ai_memory_sdk.config import Settings
from ai_memory_sdk.engines.letta import SDK_TAG, LettaEngine
from ai_memory_sdk.errors import SubjectExistsError
from ai_memory_sdk.models import BlockSpec, MessageIn

pytestmark = [pytest.mark.letta, pytest.mark.timeout(300)]

MODEL = "openai/gpt-4o-mini"
USER_BLOCKS = [
    BlockSpec(label="human", description="Details about the human user you are speaking to."),
    BlockSpec(label="summary", description="A short (1-2 sentences) running summary of the conversation.", limit=1000),
]


@pytest.fixture
def engine(letta_server: LettaServer, tmp_path: Path) -> Iterator[LettaEngine]:
    settings = Settings(
        engine="letta",
        base_url=letta_server.base_url,
        api_key="test-key",
        letta_model=MODEL,
        letta_embedding=json.dumps(letta_server.embedding_config),
        path=str(tmp_path / "memory.db"),
    )
    made = LettaEngine(settings)
    yield made
    made.close()


def test_subjects_are_listed_counted_and_found_by_query(engine: LettaEngine, letta_server: LettaServer) -> None:
    tag = uuid.uuid4().hex[:8]
    user, subject, legacy = f"Ann-{tag}@example.com", f"proj/{tag}", f"old_{tag}"
    user_agent = engine.create_subject(user, reset=False, blocks=USER_BLOCKS)
    subject_agent = engine.create_subject(subject, reset=False, blocks=[])
    client: Any = engine.client
    legacy_agent = client.agents.create(  # a user agent as ai-memory-sdk 0.2.0 made it: tags [id, ai-memory-sdk]
        name=f"subconscious_agent_user_{legacy}",
        model=MODEL,
        agent_type="sleeptime_agent",
        initial_message_sequence=[],
        tags=[legacy, SDK_TAG],
        embedding_config=letta_server.embedding_config,
    ).id
    with pytest.raises(SubjectExistsError) as info:
        engine.create_subject(user, reset=False, blocks=[])
    assert (info.value.agent_id, info.value.subject_id) == (user_agent, user)
    assert str(info.value) == (
        f"Agent {user_agent} already exists for subject {user}. Cannot re-initialize unless reset=True."
    )
    run = engine.add_messages(
        user,
        [MessageIn(role="user", content="My name is Ann", created_at=datetime.now(timezone.utc))],
        archive=False,
        default_blocks=[],
    )
    assert engine.wait_for_run(run, None).status == "completed"  # None: no limit

    found = engine.list_subjects(query=tag.upper(), offset=0, limit=10)  # case-insensitive substring
    assert [s.subject_id for s in found] == sorted([user, subject, legacy])
    by_id = {s.subject_id: s for s in found}
    assert by_id[user].agent_id == user_agent and by_id[user].blocks == 2
    assert by_id[subject].agent_id == subject_agent and by_id[subject].blocks == 0
    assert by_id[legacy].agent_id == legacy_agent
    assert by_id[user].last_run_at is not None and by_id[subject].last_run_at is None
    assert all(s.messages == 0 and s.runs_queued == 0 and s.runs_failed == 0 for s in found)
    assert engine.count_subjects(query=tag) == 3
    assert [s.subject_id for s in engine.list_subjects(query=tag, offset=1, limit=1)] == [sorted(by_id)[1]]
    assert user in {s.subject_id for s in engine.list_subjects(query=None, offset=0, limit=100_000)}

    engine.delete_subject(user)
    engine.delete_subject(legacy)
    assert [s.subject_id for s in engine.list_subjects(query=tag, offset=0, limit=10)] == [subject]
    assert engine.count_subjects(query=tag) == 1
    engine.delete_subject(subject)
    assert engine.count_subjects(query=tag) == 0


def test_reset_replaces_the_agent(engine: LettaEngine) -> None:
    sid = f"reset_{uuid.uuid4().hex[:8]}"
    first = engine.create_subject(sid, reset=False, blocks=USER_BLOCKS)
    second = engine.create_subject(sid, reset=True, blocks=[])
    assert second != first and engine.agent_id(sid) == second
    client: Any = engine.client
    assert client.agents.retrieve(second).name == f"subconscious_agent_subject_{sid}"  # no blocks: a subject
    with pytest.raises(NotFoundError):  # the old agent went with everything of it
        client.agents.retrieve(first)
    assert engine.list_blocks(sid) == []
    engine.delete_subject(sid)
