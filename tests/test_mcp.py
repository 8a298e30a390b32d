"""``ai-memory mcp``, run as an assistant runs it: a subprocess spoken to with the ``mcp`` SDK's own clients.

Over stdio (the handshake era with ``ClientSession``, the 2026 era with
``Client``) and streamable HTTP, on real SQLite files, with the offline
learner and lexical search so each test takes seconds.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import pytest

pytest.importorskip("mcp")

import anyio
from mcp import Client, ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated
from mcp_types import CallToolResult, ResourceListChangedNotification, ResourceUpdatedNotification, TextContent

from ai_memory_sdk import Memory
from ai_memory_sdk.mcp_server import Scope, block_uri, parse_block_uri

CLI = str(Path(sys.executable).parent / "ai-memory")
QUIET = ("--learner", "offline", "--embedder", "none")
ENV = {"XDG_DATA_HOME": os.environ["XDG_DATA_HOME"]}
TOOLS = {
    "get_context",
    "search_passages",
    "add_messages",
    "wait_for_run",
    "get_run",
    "set_memory",
    "restore_block",
    "list_blocks",
    "block_history",
}
pytestmark = pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")  # resources/subscribe is the 2025 era's


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    async def bounded() -> None:
        with anyio.fail_after(timeout):
            await scenario()

    anyio.run(bounded)


@asynccontextmanager
async def session(
    db: Path, *options: str, notes: list[Any] | None = None, errlog: TextIO | None = None
) -> AsyncIterator[ClientSession]:
    """A handshake-era client session with ``ai-memory mcp`` on ``db`` (notifications appended to ``notes``)."""
    params = StdioServerParameters(command=CLI, args=["--path", str(db), *QUIET, "mcp", *options], env=ENV)

    async def on_message(message: Any) -> None:
        if notes is not None:
            notes.append(message)

    async with (
        stdio_client(params, errlog=errlog or sys.stderr) as (read, write),
        ClientSession(read, write, message_handler=on_message) as s,
    ):
        await s.initialize()
        yield s


def text(result: CallToolResult) -> str:
    (content,) = result.content
    assert isinstance(content, TextContent), content
    return content.text


def ok(result: CallToolResult) -> Any:
    """A successful tool result's structured content, else its text."""
    assert not result.is_error, text(result)
    return result.structured_content if result.structured_content is not None else text(result)


def failed(result: CallToolResult) -> str:
    assert result.is_error, result
    return text(result)


async def remember(s: ClientSession, **arguments: Any) -> str:
    """add_messages, then wait_for_run: the run id of a learned batch."""
    run_id = ok(await s.call_tool("add_messages", arguments))["run_id"]
    assert ok(await s.call_tool("wait_for_run", {"run_id": run_id, **_subject(arguments)}))["status"] == "completed"
    return str(run_id)


def _subject(arguments: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in arguments.items() if k == "subject_id"}


async def until(check: Callable[[], bool], timeout: float = 5) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.02)


def updated(notes: list[Any], uri: str) -> int:
    return sum(isinstance(n, ResourceUpdatedNotification) and n.params.uri == uri for n in notes)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "memory.db"


def test_block_uris_name_any_subject_and_refuse_what_is_not_one() -> None:
    for subject in ("kai", "a/b c@d.e", "Ünï ✓", "x" * 256):
        uri = block_uri(subject, "human")
        assert re.fullmatch(r"memory://[A-Za-z0-9%._~-]+/human", uri), uri
        assert parse_block_uri(uri) == (subject, "human")
    for bad in ("memory://kai", "memory:///human", "file://kai/human", "memory://kai/1bad", "memory://kai/"):
        with pytest.raises(ValueError, match=r"memory://|label"):
            parse_block_uri(bad)
    single = Scope("kai")
    assert single.subject(None) == "kai" and single.allows("kai") and not single.allows("bob")
    with pytest.raises(LookupError, match="'kai' only"):
        single.subject("bob")
    with pytest.raises(ValueError, match="subject_id is required"):
        Scope(None, multi=True).subject(None)


def test_lists_its_tools_resources_and_prompt_for_the_os_user(db: Path) -> None:
    user = getpass.getuser()

    async def scenario() -> None:
        async with session(db) as s:
            caps = s.server_capabilities
            assert caps is not None and caps.resources is not None
            assert caps.resources.subscribe and caps.resources.list_changed
            assert s.instructions is not None and repr(user) in s.instructions
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert set(tools) == TOOLS
            for t in tools.values():
                assert t.description and len(t.description) > 100 and re.search(r"\b(Use|Call)\b", t.description)
                assert t.input_schema["type"] == "object" and t.input_schema["additionalProperties"] is False
                assert "subject_id" not in t.input_schema["properties"]  # one subject: nothing to choose
                assert t.annotations is not None
                assert t.annotations.read_only_hint is (t.name not in {"add_messages", "set_memory", "restore_block"})
            assert tools["search_passages"].input_schema["required"] == ["query"]
            assert set(tools["search_passages"].input_schema["properties"]) == {
                "query",
                "limit",
                "tags",
                "start",
                "end",
            }
            assert (await s.list_resources()).resources == []
            (prompt,) = (await s.list_prompts()).prompts
            assert (prompt.name, prompt.title, prompt.arguments) == ("start_with_memory", "Start with my memory", None)
            empty = (await s.get_prompt("start_with_memory")).messages[0].content
            assert "no memory of me yet" in getattr(empty, "text", "")

            await remember(s, note="My name is Kai.")
            listed = (await s.list_resources()).resources
            assert [(str(r.uri), r.name) for r in listed] == [
                (block_uri(user, "human"), "human"),
                (block_uri(user, "summary"), "summary"),
            ]
            assert listed[0].description == "Details about the human user you are speaking to."

    run(scenario)


def test_remember_wait_then_the_context_resource_and_prompt_show_the_learned_block(db: Path) -> None:
    async def scenario() -> None:
        async with session(db, "--subject", "kai") as s:
            said = [
                {"role": "user", "content": "Hi! My name is Kai and I live in Lisbon."},
                {"role": "assistant", "content": "Nice to meet you, Kai!"},
            ]
            queued = ok(await s.call_tool("add_messages", {"messages": said}))
            assert queued["messages"] == 2 and queued["subject_id"] == "kai"
            assert ok(await s.call_tool("get_run", {"run_id": queued["run_id"]}))["subject_id"] == "kai"
            learned = ok(await s.call_tool("wait_for_run", {"run_id": queued["run_id"], "timeout_seconds": 20}))
            assert learned["status"] == "completed" and learned["learner"] == "offline" and learned["finished_at"]

            context = ok(await s.call_tool("get_context", {}))
            assert context.startswith('<human description="Details about the human user you are speaking to.">')
            assert "Name: Kai" in context and "Location: Lisbon" in context and "<summary " in context

            human = (await s.read_resource("memory://kai/human")).contents[0]
            assert getattr(human, "text", "") == context.splitlines()[0] + "\n" + context.splitlines()[1]
            assert human.mime_type == "text/plain"
            prompt = (await s.get_prompt("start_with_memory")).messages
            assert prompt[0].role == "user" and context in getattr(prompt[0].content, "text", "")

            blocks = ok(await s.call_tool("list_blocks", {}))["blocks"]
            assert [(b["label"], b["limit"]) for b in blocks] == [("human", 10000), ("summary", 1000)]
            history = ok(await s.call_tool("block_history", {"label": "human"}))["versions"]
            assert history[-1]["run_id"] == queued["run_id"] and "Name: Kai" in history[-1]["value"]

    run(scenario)
    with Memory(path=str(db), learner="offline", embedder="none", background=False) as mem:
        assert "Name: Kai" in (mem.get_user_memory("kai") or "")  # what the server learned is in the store


def test_search_finds_an_archived_message_by_words_role_and_time(db: Path) -> None:
    async def scenario() -> None:
        async with session(db, "--subject", "kai") as s:
            await remember(
                s,
                messages=[
                    {"role": "user", "content": "I keep a sailing boat called Mistral in Cascais."},
                    {"role": "assistant", "content": "Mistral is a fine name for a boat."},
                ],
            )
            await remember(s, messages=[{"role": "user", "content": "My boat needs new sails."}], archive=False)
            found = ok(await s.call_tool("search_passages", {"query": "boat"}))["results"]
            assert [r["content"] for r in found] == ["I keep a sailing boat called Mistral in Cascais."]
            assert found[0]["role"] == "user" and found[0]["score"] > 0
            every_role = ok(await s.call_tool("search_passages", {"query": "Mistral", "tags": []}))["results"]
            assert {r["role"] for r in every_role} == {"user", "assistant"}
            past = {"query": "boat", "end": "2000-01-01"}
            assert ok(await s.call_tool("search_passages", past))["results"] == []

    run(scenario)


def test_errors_come_back_as_tool_errors_and_the_server_goes_on(db: Path, tmp_path: Path) -> None:
    log = tmp_path / "stderr.log"

    async def scenario() -> None:
        with log.open("w") as errlog:
            async with session(db, "--subject", "kai", "-v", errlog=errlog) as s:
                bad = failed(await s.call_tool("search_passages", {"query": "x", "limit": "many"}))
                assert bad.startswith("invalid arguments for search_passages: limit:")
                assert "subject_id: unknown argument" in failed(await s.call_tool("get_context", {"subject_id": "bob"}))
                assert "query: Field required" in failed(await s.call_tool("search_passages", {}))
                assert "query must be a non-empty string" in failed(
                    await s.call_tool("search_passages", {"query": " "})
                )
                role = failed(await s.call_tool("add_messages", {"messages": [{"role": "robot", "content": "hi"}]}))
                assert "role must be one of user, assistant" in role
                assert "nothing to remember" in failed(await s.call_tool("add_messages", {}))
                unknown = failed(await s.call_tool("wait_for_run", {"run_id": "run-nope"}))
                assert unknown == "Run run-nope not found"
                assert "Run run-nope not found" in failed(await s.call_tool("get_run", {"run_id": "run-nope"}))
                label = failed(await s.call_tool("set_memory", {"label": "1bad", "value": "x"}))
                assert "label must be 1-64 characters matching" in label
                missing = failed(await s.call_tool("set_memory", {"label": "projects", "value": "x"}))
                assert "projects" in missing and "give a description to create it" in missing
                assert "unknown tool 'forget'" in failed(await s.call_tool("forget", {}))
                with pytest.raises(MCPError, match="has no block 'human'"):
                    await s.read_resource("memory://kai/human")
                with pytest.raises(MCPError, match="no such resource"):
                    await s.read_resource("memory://bob/human")
                with pytest.raises(MCPError, match="not a memory block URI"):
                    await s.read_resource("file:///etc/passwd")

                await remember(s, note="My name is Kai.")
                too_long = failed(await s.call_tool("set_memory", {"label": "summary", "value": "x" * 1001}))
                assert too_long == "value has 1001 characters, over the block's limit of 1000"
                version = failed(await s.call_tool("restore_block", {"label": "human", "version": 99}))
                assert "no version 99" in version
                assert "Name: Kai" in ok(await s.call_tool("get_context", {}))  # still serving, nothing half-written

    run(scenario)
    text = log.read_text()
    assert "Traceback" not in text and "INFO" in text  # logging happened, on stderr


def test_set_memory_edits_or_creates_a_block_and_restore_brings_a_version_back(db: Path) -> None:
    async def scenario() -> None:
        async with session(db, "--subject", "kai") as s:
            await remember(s, note="My name is Kai.")
            edited = ok(await s.call_tool("set_memory", {"label": "human", "value": "Name: Kai\nPrefers: tea"}))
            assert edited == {"label": "human", "chars": 22, "created": False}
            created = ok(
                await s.call_tool(
                    "set_memory",
                    {
                        "label": "projects",
                        "value": "Boat refit",
                        "description": "The user's projects",
                        "char_limit": 500,
                    },
                )
            )
            assert created["created"] is True
            context = ok(await s.call_tool("get_context", {}))
            assert (
                "Prefers: tea" in context
                and '<projects description="The user\'s projects">Boat refit</projects>' in context
            )
            versions = ok(await s.call_tool("block_history", {"label": "human"}))["versions"]
            learned = next(v for v in versions if v["run_id"] is not None)
            restored = ok(await s.call_tool("restore_block", {"label": "human", "version": learned["version"]}))
            assert restored["value"] == learned["value"] and "Prefers" not in restored["value"]
            assert "Prefers: tea" not in ok(await s.call_tool("get_context", {}))

    run(scenario)


def test_subscribers_hear_when_a_run_or_another_process_changes_a_block(db: Path) -> None:
    notes: list[Any] = []
    uri = "memory://kai/human"

    async def scenario() -> None:
        async with session(db, "--subject", "kai", "--watch-interval", "0.1", notes=notes) as s:
            assert (await s.list_resources()).resources == []
            await s.subscribe_resource(uri)  # before the block exists: its creation is a change too
            await remember(s, note="My name is Kai.")
            await until(lambda: updated(notes, uri) > 0)
            await until(lambda: any(isinstance(n, ResourceListChangedNotification) for n in notes))
            assert "Name: Kai" in getattr((await s.read_resource(uri)).contents[0], "text", "")

            seen = updated(notes, uri)
            run_id = ok(await s.call_tool("add_messages", {"note": "I live in Lisbon."}))["run_id"]
            ok(await s.call_tool("wait_for_run", {"run_id": run_id}))
            await until(lambda: updated(notes, uri) > seen, timeout=1)  # sent before wait_for_run answered
            assert "Location: Lisbon" in getattr((await s.read_resource(uri)).contents[0], "text", "")
            assert updated(notes, "memory://kai/summary") == 0  # changed too, but not subscribed

            # Another process on the same store (an app, a worker) changes the block: the watch sees it.
            seen = updated(notes, uri)
            with Memory(path=str(db), learner="offline", embedder="none", background=False) as other:
                other.set_memory("human", "Name: Kai (edited elsewhere)", subject_id="kai")
            await until(lambda: updated(notes, uri) > seen)
            assert "edited elsewhere" in getattr((await s.read_resource(uri)).contents[0], "text", "")

            await s.unsubscribe_resource(uri)
            seen = updated(notes, uri)
            ok(await s.call_tool("set_memory", {"label": "human", "value": "Name: Kai"}))
            await anyio.sleep(0.4)
            assert updated(notes, uri) == seen

    run(scenario)


def test_a_2026_client_follows_a_block_with_subscriptions_listen(db: Path) -> None:
    uri = "memory://kai/human"
    params = StdioServerParameters(command=CLI, args=["--path", str(db), *QUIET, "mcp", "--subject", "kai"], env=ENV)

    async def scenario() -> None:
        async with Client(params) as c:
            assert c.protocol_version == "2026-07-28"
            assert (await c.list_resources()).resources == []  # a 2026 client hears of list changes by listening
            async with c.listen(resource_subscriptions=[uri, "memory://bob/human"]) as sub:
                assert sub.honored.resource_subscriptions == [uri, "memory://bob/human"]
                run_id = (await c.call_tool("add_messages", {"note": "I live in Porto."})).structured_content["run_id"]
                await c.call_tool("wait_for_run", {"run_id": run_id})
                async for event in sub:
                    assert event == ResourceUpdated(uri=uri)  # bob is not this server's: never announced
                    text = getattr((await c.read_resource(uri)).contents[0], "text", "")
                    if "Location: Porto" in text:
                        break

    run(scenario)


def test_two_subjects_stay_apart(db: Path) -> None:
    async def scenario() -> None:
        async with session(db, "--subject", "ann") as ann, session(db, "--subject", "bob") as bob:
            ann_run = await remember(ann, note="My name is Ann and I live in Oslo.")
            await remember(bob, note="My name is Bob.")
            assert "Ann" not in ok(await bob.call_tool("get_context", {}))
            assert "Bob" not in ok(await ann.call_tool("get_context", {}))
            assert ok(await bob.call_tool("search_passages", {"query": "Oslo"}))["results"] == []
            assert failed(await bob.call_tool("get_run", {"run_id": ann_run})) == f"Run {ann_run} not found"
            assert failed(await bob.call_tool("wait_for_run", {"run_id": ann_run})) == f"Run {ann_run} not found"
            with pytest.raises(MCPError, match="no such resource"):
                await bob.read_resource("memory://ann/human")
            with pytest.raises(MCPError, match="no such resource"):
                await bob.subscribe_resource("memory://ann/human")
            assert [str(r.uri) for r in (await bob.list_resources()).resources] == [
                "memory://bob/human",
                "memory://bob/summary",
            ]

        async with session(db, "--multi-subject") as many:
            schema = next(t for t in (await many.list_tools()).tools if t.name == "get_context").input_schema
            assert schema["required"] == ["subject_id"]
            assert "subject_id: Field required" in failed(await many.call_tool("get_context", {}))
            await remember(many, subject_id="cy", note="My name is Cy.")
            assert "Name: Cy" in ok(await many.call_tool("get_context", {"subject_id": "cy"}))
            assert "Cy" not in ok(await many.call_tool("get_context", {"subject_id": "ann"}))
            assert "Name: Ann" in ok(await many.call_tool("get_context", {"subject_id": "ann"}))
            assert "Ann" in getattr((await many.read_resource("memory://ann/human")).contents[0], "text", "")
            (template,) = (await many.list_resource_templates()).resource_templates
            assert template.uri_template == "memory://{subject_id}/{label}"
            assert (await many.list_resources()).resources == []  # no default subject: nothing to list
            cy_run = ok(await many.call_tool("add_messages", {"subject_id": "cy", "note": "I like tea."}))["run_id"]
            not_yours = failed(await many.call_tool("get_run", {"subject_id": "ann", "run_id": cy_run}))
            assert not_yours == f"Run {cy_run} not found"
            prompt = await many.get_prompt("start_with_memory", {"subject_id": "ann"})
            assert "Name: Ann" in getattr(prompt.messages[0].content, "text", "")

    run(scenario)


def _send(proc: subprocess.Popen[str], message: dict[str, Any]) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"jsonrpc": "2.0", **message}) + "\n")
    proc.stdin.flush()


def _answer(proc: subprocess.Popen[str], request_id: int, lines: list[str]) -> dict[str, Any]:
    """Read stdout lines (all kept) until the response to ``request_id``."""
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        assert line, "the server closed stdout"
        lines.append(line)
        message = json.loads(line)
        if message.get("id") == request_id:
            return message  # type: ignore[no-any-return]


def test_stdout_carries_only_protocol_messages_and_eof_ends_the_server(db: Path, tmp_path: Path) -> None:
    stderr = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen(
        [CLI, "--path", str(db), *QUIET, "-v", "mcp", "--subject", "kai"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **ENV},
    )
    lines: list[str] = []
    try:
        _send(proc, {"id": 1, "method": "initialize", "params": _hello()})
        assert _answer(proc, 1, lines)["result"]["serverInfo"]["name"] == "ai-memory"
        _send(proc, {"method": "notifications/initialized"})
        _send(proc, {"id": 2, "method": "resources/subscribe", "params": {"uri": "memory://kai/human"}})
        _answer(proc, 2, lines)
        call = {"name": "add_messages", "arguments": {"note": "My name is Kai."}}
        _send(proc, {"id": 3, "method": "tools/call", "params": call})
        run_id = _answer(proc, 3, lines)["result"]["structuredContent"]["run_id"]
        _send(
            proc, {"id": 4, "method": "tools/call", "params": {"name": "wait_for_run", "arguments": {"run_id": run_id}}}
        )
        assert _answer(proc, 4, lines)["result"]["isError"] is False
        _send(proc, {"id": 5, "method": "tools/call", "params": {"name": "get_run", "arguments": {"run_id": 7}}})
        assert _answer(proc, 5, lines)["result"]["isError"] is True
        _send(proc, {"id": 6, "method": "resources/read", "params": {"uri": "memory://kai/nothing"}})
        assert _answer(proc, 6, lines)["error"]["message"] == "subject 'kai' has no block 'nothing'"
        assert proc.stdin is not None
        proc.stdin.close()  # how a client ends a stdio server
        assert proc.wait(timeout=10) == 0
        assert proc.stdout is not None
        lines += proc.stdout.readlines()
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr.close()
    messages = [json.loads(line) for line in lines]  # every line is one JSON-RPC message: nothing else on stdout
    assert all(m["jsonrpc"] == "2.0" for m in messages)
    assert any(m.get("method") == "notifications/resources/updated" for m in messages)
    log = (tmp_path / "stderr.log").read_text()
    assert "ai-memory mcp: memory of 'kai' over stdio" in log and "INFO" in log and "Traceback" not in log


def _hello() -> dict[str, Any]:
    return {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}


def test_over_streamable_http_with_notifications_and_sigterm(db: Path, tmp_path: Path) -> None:
    stderr = (tmp_path / "stderr.log").open("w+")
    proc = subprocess.Popen(
        [CLI, "--path", str(db), *QUIET, "-v", "mcp", "--http", "--port", "0", "--multi-subject", "--subject", "kai"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env={**os.environ, **ENV},
    )
    try:
        url = _served_url(tmp_path / "stderr.log", proc)
        assert url.startswith("http://127.0.0.1:")
        notes: list[Any] = []

        async def on_message(message: Any) -> None:
            notes.append(message)

        async def scenario() -> None:
            async with (
                streamable_http_client(url) as (read, write),
                ClientSession(read, write, message_handler=on_message) as s,
            ):
                await s.initialize()
                assert {t.name for t in (await s.list_tools()).tools} == TOOLS
                await s.subscribe_resource("memory://kai/human")
                await remember(s, note="My name is Kai.")  # the default subject
                await remember(s, subject_id="ann", note="My name is Ann.")
                assert "Name: Kai" in ok(await s.call_tool("get_context", {}))
                assert "Name: Ann" in ok(await s.call_tool("get_context", {"subject_id": "ann"}))
                await until(lambda: updated(notes, "memory://kai/human") > 0)
                assert updated(notes, "memory://ann/human") == 0
                assert "subject_id: Input should be a valid string" in failed(
                    await s.call_tool("get_context", {"subject_id": 5})
                )
                assert next(str(r.uri) for r in (await s.list_resources()).resources) == "memory://kai/human"

        run(scenario)
        assert re.search(r"MCP session \w+ closed: dropping its subscriptions", (tmp_path / "stderr.log").read_text())
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
        assert proc.stdout is not None and proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
        stderr.close()
    assert "Traceback" not in (tmp_path / "stderr.log").read_text()


def _served_url(log: Path, proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"over (http://\S+/mcp)", log.read_text())
        if found:
            return found.group(1)
        assert proc.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError("the server did not say where it listens: " + log.read_text())


def test_command_line_mistakes_are_one_line_with_status_2(db: Path) -> None:
    for args, names in (
        (("mcp", "--port", "70000"), ("--port", "70000")),
        (("mcp", "--watch-interval", "0"), ("--watch-interval",)),
        (("mcp", "--subject", ""), ("--subject",)),
        (("--embedder", "bogus", "mcp"), ("--embedder", "bogus")),
    ):
        proc = subprocess.run(
            [CLI, "--path", str(db), *args], capture_output=True, text=True, timeout=60, env={**os.environ, **ENV}
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stdout == "" and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert all(name in proc.stderr for name in names), proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_port_in_use_is_one_line_with_status_1(db: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [CLI, "--path", str(db), *QUIET, "mcp", "--http", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **ENV},
        )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith(f"ai-memory: error: cannot listen on 127.0.0.1:{port}: ")
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_without_the_mcp_extra_the_command_says_what_to_install(
    db: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ai_memory_sdk.cli import main

    for name in [n for n in sys.modules if n == "mcp" or n.startswith("mcp.")]:
        monkeypatch.setitem(sys.modules, name, None)  # "import mcp..." fails as without the SDK
    for name in [n for n in sys.modules if n.startswith("ai_memory_sdk.mcp_server")]:
        monkeypatch.delitem(sys.modules, name)
    assert main(["--path", str(db), *QUIET, "mcp"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("ai-memory: error: ai-memory mcp needs the MCP SDK")
        and "pip install 'ai-memory-sdk[mcp]'" in err
    )
    assert not db.exists()  # refused before opening anything
