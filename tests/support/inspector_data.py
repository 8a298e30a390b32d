"""A store worth inspecting, and the inspector served on 127.0.0.1, for the inspector's tests.

``populate`` drives the real LLM learner against the scripted OpenAI-compatible
server: each batch saying "fact: X." makes the memory agent insert X into the
``human`` block, a batch saying ``FAILME`` gets an HTTP 400 (a failed run).
The application edits blocks directly too, one of them with HTML in it.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from support.openai_server import ScriptedOpenAI, fail, reply

_FACT = re.compile(r"fact: ([^.\"\\]+)\.")
HOSTILE = '<script>window.__pwned = 1</script><b>bold?</b> & "quotes"'


def responder(request: dict[str, Any]) -> Any:
    """The memory agent's model: inserts each new "fact: X." into ``human``; refuses a batch saying FAILME."""
    if not request.get("tools"):
        return reply("ok")
    user = json.dumps(request["messages"][1:2])
    if "FAILME" in user:
        return fail(
            400, {"error": {"message": "the model refused this batch (FAILME)", "type": "invalid_request_error"}}
        )
    if any(m.get("role") == "tool" for m in request["messages"]):
        return reply(tool_calls=[("memory_finish_edits", {})])
    facts = _FACT.findall(user)
    calls: list[tuple[str, dict[str, Any]]] = [
        ("memory_insert", {"label": "human", "new_str": f, "insert_line": -1}) for f in facts
    ]
    return reply(
        tool_calls=[*calls, ("memory_finish_edits", {})], usage={"prompt_tokens": 420, "completion_tokens": 37}
    )


def llm_options(server: ScriptedOpenAI) -> dict[str, Any]:
    return {"learner": "llm", "llm_base_url": server.base_url, "llm_api_key": "sk-test", "embedder": "none"}


@dataclass
class Population:
    alice: str = "alice@example.com"
    bob: str = "bob"
    failed_run: str = ""
    alice_runs: list[str] = field(default_factory=list)
    others: list[str] = field(default_factory=list)


def populate(mem: Any, extra_subjects: int = 0) -> Population:
    """Subjects with learned blocks, history from runs and from the application, a failed run, a hostile value."""
    p = Population()
    batches = [
        ("Hi, I am Alice. Please remember fact: name is Alice.", "Nice to meet you, Alice."),
        ("I moved to Porto last year, fact: lives in Porto.", "Porto is lovely."),
        ("I adore octopuses, fact: loves octopuses.", "They are clever animals."),
    ]
    for user, assistant in batches:
        run = mem.add_messages(
            p.alice,
            [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}],
            skip_vector_storage=False,
        )
        mem.wait_for_run(run)
        p.alice_runs.append(run)
    mem.set_memory("human", "name is Alice\nlives in Porto\nloves octopuses\nprefers tea (set by the app)", p.alice)
    mem.initialize_memory("notes", "Free-form notes the app keeps.", value=HOSTILE, subject_id=p.alice)
    p.failed_run = mem.add_messages(p.bob, [{"role": "user", "content": "FAILME: fact: likes chess."}])
    with contextlib.suppress(Exception):
        mem.wait_for_run(p.failed_run)
    for i in range(extra_subjects):
        sid = f"user-{i:03d}"
        mem.initialize_user_memory(sid, user_context_block_value=f"user number {i}")
        p.others.append(sid)
    return p


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
