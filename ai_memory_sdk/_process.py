"""Who holds a claim or a journal row, and whether that process is still alive.

An owner is ``host:pid:nonce``. A lease on a run (the store's queue) or a row
of the ``letta`` engine's journal names its owner, so another process on the
same host can tell at once that the owner died instead of waiting for its
lease to expire. The nonce tells apart two processes that reused one pid.
"""

from __future__ import annotations

import os
import socket
import uuid


def process_owner() -> str:
    """A new owner name for this process: ``host:pid:nonce``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def owner_dead(owner: str, host: str | None = None) -> bool:
    """True for an owner of this host (or ``host``) whose process is gone; another host's owner is never judged."""
    o_host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return o_host == (host or socket.gethostname()) and pid.isdigit() and not pid_alive(int(pid))


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has this pid (a zombie counts as alive until reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
