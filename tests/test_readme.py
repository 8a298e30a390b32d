"""The README's quickstart (the original SDK's, unchanged) runs against a scripted OpenAI server."""

from __future__ import annotations

import re
from pathlib import Path

from support.openai_server import reply

README = Path(__file__).resolve().parent.parent / "README.md"


def _code(heading: str) -> str:
    """The first Python block after ``heading`` in the README."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _model(request: dict):
    """A stand-in LLM: answers the app's chat; edits the human block for the memory agent."""
    if request.get("tools"):
        return reply(
            tool_calls=[
                ("memory_insert", {"label": "human", "new_str": "Name: Bob", "insert_line": -1}),
                ("memory_finish_edits", {}),
            ]
        )
    return reply("Hello Bob, nice to meet you!")


def test_readme_opens_with_the_two_commands():
    lines = [ln for ln in README.read_text(encoding="utf-8").splitlines() if ln.strip()]
    block = lines[lines.index("```bash") + 1 :][:2]
    assert "ai-memory demo" in block[0] and "pip install" in block[0]
    assert "pytest" in block[1] and ".ci/setup" in block[1]
    # CI calls exactly the README's test command
    assert block[1].split("#")[0].strip() in (README.parent / ".ci" / "run").read_text()


def _environment(openai_server, monkeypatch, tmp_path) -> None:
    openai_server.responder = _model
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("AI_MEMORY_PATH", str(tmp_path / "quickstart.db"))
    monkeypatch.setenv("AI_MEMORY_EMBEDDER", "none")


def test_quickstart_keeps_every_turn_and_learns(openai_server, monkeypatch, tmp_path):
    """Three turns before anything is learned: nothing is erased, and the profile reaches the next prompt."""
    _environment(openai_server, monkeypatch, tmp_path)
    namespace: dict = {"__name__": "quickstart"}
    exec(compile(_code("## Quickstart"), "README-quickstart", "exec"), namespace)
    memory = namespace["memory"]
    try:
        for text in ("Hi, my name is Bob", "I like tea", "And chess"):
            assert namespace["chat_with_memories"](text) == "Hello Bob, nice to meet you!"
        for run in memory.list_runs("default_user"):
            memory.wait_for_run(run.id, timeout=30)
        said = [m.content for m in memory.get_messages("default_user") if m.role == "user"]
        assert said == ["Hi, my name is Bob", "I like tea", "And chess"]  # no turn erased
        assert "Name: Bob" in memory.get_user_memory("default_user")
        namespace["chat_with_memories"]("What is my name?")
        app_calls = [r.json for r in openai_server.chat_requests if not r.json.get("tools")]
        system = app_calls[-1]["messages"][0]["content"]
        assert '<human description="Details about the human user you are speaking to.">Name: Bob' in system
    finally:
        memory.close()


def test_the_original_quickstart_runs_unchanged(openai_server, monkeypatch, tmp_path, capsys):
    _environment(openai_server, monkeypatch, tmp_path)
    namespace: dict = {"__name__": "quickstart"}
    exec(compile(_code("<summary>The 0.2.0 quickstart"), "README-quickstart-0.2.0", "exec"), namespace)
    memory = namespace["memory"]
    try:
        answer = namespace["chat_with_memories"]("Hi, my name is Bob")
        assert answer == "Hello Bob, nice to meet you!"
        run = memory.list_runs("default_user")[-1]
        memory.wait_for_run(run.id, timeout=30)
        assert memory.get_run(run.id).learner == "llm"
        assert "Name: Bob" in memory.get_user_memory("default_user")
        # The next turn's system prompt carries the learned block, prompt-formatted.
        namespace["chat_with_memories"]("What is my name?")
        app_calls = [r.json for r in openai_server.chat_requests if not r.json.get("tools")]
        system = app_calls[-1]["messages"][0]["content"]
        assert '<human description="Details about the human user you are speaking to.">Name: Bob</human>' in system
    finally:
        memory.close()
    assert "Updating memory..." in capsys.readouterr().out
