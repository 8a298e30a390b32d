"""``examples/server_curl.sh`` runs as its header says, against a live ``ai-memory serve``, and shows what it claims."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.ai_memory_server import ServeProcess

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "server_curl.sh"


@pytest.mark.skipif(shutil.which("curl") is None, reason="the example needs curl")
def test_the_curl_walkthrough(ai_memory_server: ServeProcess) -> None:
    env = {**os.environ, "AI_MEMORY": str(Path(sys.executable).parent / "ai-memory")}
    done = subprocess.run(
        ["bash", str(EXAMPLE), ai_memory_server.path, ai_memory_server.url],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "status: completed" in out
    assert "<human> 'Name: Alice\\nLocation: Lisbon\\nLikes: sailing on weekends'" in out, out
    assert "user: I love sailing on weekends." in out
    assert '"type": "ValueError"' in out and "messages[0].role" in out
    assert '"type": "Unauthorized"' in out
    assert "with the revoked key: HTTP 401" in out
    assert "request_id" not in out
    assert "[curl-demo-add]" in ai_memory_server.log()  # the request id the example sent is in the access log
