"""The README's quickstart (the original SDK's, unchanged) runs against a scripted OpenAI server."""

from __future__ import annotations

import re
from pathlib import Path

from support import internals
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


def test_the_core_calls_run(monkeypatch, tmp_path, capsys):
    """The reference snippet, as printed: offline learner, the default embedder (MiniLM when the extra is in)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("AI_MEMORY_PATH", str(tmp_path / "core.db"))
    namespace: dict = {"__name__": "core"}
    exec(compile(_code("### The core calls"), "README-core-calls", "exec"), namespace)
    memory = namespace["memory"]
    try:
        out = capsys.readouterr().out
        assert "Location: Oslo" in out and "<summary" in out
        hits = memory.search("user-1", "winter sports")
        assert isinstance(hits, list)
        if internals.embedder(memory) is not None:  # semantic search (the local extra): skiing is a winter sport
            assert hits[0] == "Hi, I'm Sam. I live in Oslo and I love skiing."
        assert memory.search("user-1", "skiing", tags=[])[0] == "Hi, I'm Sam. I live in Oslo and I love skiing."
    finally:
        memory.close()


def test_the_local_model_snippet_runs(openai_server, monkeypatch, tmp_path):
    """The llama.cpp section's Python block, against the scripted server standing in for llama.cpp."""
    openai_server.responder = _model
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("AI_MEMORY_MODEL", "SmolLM2-135M-Instruct")
    monkeypatch.setenv("AI_MEMORY_PATH", str(tmp_path / "llama.db"))
    monkeypatch.setenv("AI_MEMORY_EMBEDDER", "none")
    namespace: dict = {"__name__": "llama"}
    exec(compile(_code("### llama.cpp"), "README-llama", "exec"), namespace)
    memory = namespace["memory"]
    try:
        assert "Name: Bob" in memory.get_user_memory("caroline")
        assert {b.label: b.limit for b in memory.list_blocks("caroline")} == {"human": 600, "summary": 300}
        assert openai_server.chat_requests[-1].json["model"] == "SmolLM2-135M-Instruct"
    finally:
        memory.close()


# Every Python block of the README is run: here, or as the example program that holds the same code.
_RUN_ELSEWHERE = {
    "## Integrations": ("examples/agents_session.py", "examples/wrap_openai.py"),  # fragments of those programs
}


def test_every_python_block_is_run_somewhere():
    text = README.read_text(encoding="utf-8")
    headings = [h for h in re.findall(r"^(#{2,3} .+)$", text, re.M)]
    run_here = {"## Quickstart", "### The core calls", "### llama.cpp (llama-cpp-python's server)"}
    with_blocks = []
    for i, heading in enumerate(headings):
        start = text.index(heading + "\n")
        end = text.index(headings[i + 1] + "\n") if i + 1 < len(headings) else len(text)
        if "```python" in text[start:end]:
            with_blocks.append(heading)
    # the 0.2.0 quickstart sits under "Coming from ai-memory-sdk 0.2.0" (run by the test above)
    run_here.add("### Coming from ai-memory-sdk 0.2.0")
    assert set(with_blocks) <= run_here | set(_RUN_ELSEWHERE), set(with_blocks) - run_here - set(_RUN_ELSEWHERE)
    for programs in _RUN_ELSEWHERE.values():
        for program in programs:
            assert (README.parent / program).is_file()
