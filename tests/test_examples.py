"""The examples run as documented, against the scripted OpenAI-compatible server (no key, no network)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from support.openai_server import ScriptedOpenAI, reply

from ai_memory_sdk import Memory

ROOT = Path(__file__).resolve().parents[1]


def _model(request: dict) -> object:
    """The app's chat answers; the memory agent records the user's name."""
    if request.get("tools"):
        return reply(
            tool_calls=[
                ("memory_insert", {"label": "human", "new_str": "Name: Alice"}),
                ("memory_finish_edits", {}),
            ]
        )
    return reply("Nice to meet you, Alice.")


def test_chat_example_learns_and_uses_memory(tmp_path: Path) -> None:
    path = tmp_path / "chat.db"
    with ScriptedOpenAI() as llm:
        llm.responder = _model
        env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": llm.base_url, "AI_MEMORY_EMBEDDER": "none"}
        proc = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "chat.py"), "--user", "alice", "--path", str(path)],
            input="Hi, I'm Alice.\n/memory\n/quit\n",
            capture_output=True,
            text=True,
            timeout=120,
            env={**_base_env(), **env},
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        assert "assistant> Nice to meet you, Alice." in proc.stdout
    with Memory(path=path, learner="offline", embedder="none", background=False) as m:
        assert "Name: Alice" in (m.get_user_memory("alice") or "")  # learned before the example exited


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "AI_MEMORY_"))}
