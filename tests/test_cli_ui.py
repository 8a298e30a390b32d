"""``ai-memory ui``: the console script serves the inspector over an existing store, on 127.0.0.1 by default."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.inspector_data import HOSTILE

from ai_memory_sdk import Memory
from ai_memory_sdk.cli.ui import _loopback

CLI = str(Path(sys.executable).parent / "ai-memory")
QUIET = ("--learner", "offline", "--embedder", "none")


def _store(path: Path) -> str:
    with Memory(path=str(path), learner="offline", embedder="none") as mem:
        run = mem.add_messages("kai", [{"role": "user", "content": "I am Kai and I love sailing."}])
        mem.wait_for_run(run)
        mem.initialize_memory("notes", "notes", value=HOSTILE, subject_id="kai")
    return run


def test_ui_serves_the_store_on_localhost_until_interrupted(tmp_path):
    path = tmp_path / "m.db"
    run = _store(path)
    proc = subprocess.Popen(
        [CLI, "ui", "--path", str(path), "--port", "0", *QUIET],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        first = proc.stdout.readline()
        assert first.startswith("ai-memory inspector: http://127.0.0.1:"), (first, proc.stderr.read())
        assert str(path) in first
        url = first.split()[2]
        home = httpx.get(url, timeout=30)
        assert home.status_code == 200 and "kai" in home.text and "1 subject" in home.text
        subject = httpx.get(f"{url}subject", params={"id": "kai"}, timeout=30).text
        assert "&lt;script&gt;window.__pwned" in subject and "<script>window.__pwned" not in subject
        assert "sailing" in subject  # what the offline learner wrote into human
        assert httpx.get(f"{url}run/{run}", timeout=30).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_ui_refuses_what_it_cannot_serve(tmp_path):
    missing = subprocess.run(
        [CLI, "ui", "--path", str(tmp_path / "nope.db"), *QUIET], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "no store at" in missing.stderr and len(missing.stderr.splitlines()) == 1
    assert not (tmp_path / "nope.db").exists()
    bad_port = subprocess.run([CLI, "ui", "--port", "70000"], capture_output=True, text=True, timeout=60)
    assert bad_port.returncode == 2 and "--port" in bad_port.stderr and "0 (any free port) to 65535" in bad_port.stderr
    path = tmp_path / "m.db"
    _store(path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [CLI, "ui", "--path", str(path), "--port", str(port), *QUIET], capture_output=True, text=True, timeout=60
        )
    assert busy.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr, busy.stderr
    assert "Traceback" not in busy.stderr


@pytest.mark.parametrize(
    "host, local",
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("::", False)],
)
def test_only_loopback_addresses_count_as_local(host, local):
    assert _loopback(host) is local
