"""Leases: a pass longer than the lease keeps its claim while its process lives, in every way of working.

Another process's recovery takes back runs whose lease expired (their
process is presumed dead). A live worker must renew its leases: the
background pool's heartbeat does; ``ai-memory worker --once``
(``engine.work(once=True)``, which drains in the calling thread) must too, or
a long pass is taken over and learned twice (twice the LLM cost, one result
thrown away, and possibly forever when every pass outlives the lease).
"""

from __future__ import annotations

import threading
import time

from support import internals
from support.openai_server import ScriptedOpenAI

from ._harness import batch_learner_responder


def test_a_drained_pass_longer_than_the_lease_is_not_taken_over(make_memory, tmp_path):
    with ScriptedOpenAI(latency=2.5) as server:  # one LLM call outlives two leases
        server.responder = batch_learner_responder
        opts = dict(
            path=str(tmp_path / "lease.db"),
            learner="llm",
            llm_base_url=server.base_url,
            llm_api_key="sk-test",
            lease_seconds=1.0,
            poll_interval=0.05,
        )
        worker = make_memory(background=False, **opts)  # what `ai-memory worker --once` runs
        worker.initialize_user_memory("u")
        run_id = worker.add_messages("u", [{"role": "user", "content": "batch B1-M0 says hello"}])
        drained = threading.Thread(target=internals.drain, args=(worker,))
        drained.start()
        assert server.wait_for(1, "chat", timeout=10)
        app = make_memory(**opts)  # another live process with background workers and recovery
        app.add_messages("other", [{"role": "user", "content": "batch B2-M0 says hello"}])  # starts its pool
        drained.join(30)
        app.wait_for_run(run_id, timeout=30)
        time.sleep(0.5)
        human = app.get_user_memory("u")
        chats_for_u = [r for r in server.chat_requests if "B1-M0" in r.body.decode()]
    assert human == "learned B1"
    assert len(chats_for_u) == 1, f"the pass was taken over and sent {len(chats_for_u)} times"
