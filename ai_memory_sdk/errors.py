"""The package's exception types.

Bad input raises the built-in ``ValueError``/``TypeError`` (docs/api.md);
everything specific to this package derives from :class:`AIMemoryError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .models import Run


class AIMemoryError(Exception):
    """Base class of every error this package raises on purpose."""


class RunNotFoundError(AIMemoryError, LookupError):
    """``wait_for_run``/``get_run`` got an id that no store knows."""


class RunFailedError(AIMemoryError):
    """The run ended ``failed``; ``run.error`` and ``run.stop_reason`` say why."""

    def __init__(self, run: Run) -> None:
        self.run = run
        reason = f" (stop_reason={run.stop_reason})" if run.stop_reason else ""
        super().__init__(f"Run {run.id} failed{reason}: {run.error or 'no error recorded'}")


class RunCancelledError(AIMemoryError):
    """The run was cancelled before it was learned."""

    def __init__(self, run: Run) -> None:
        self.run = run
        super().__init__(f"Run {run.id} was cancelled")


class RunStateError(AIMemoryError, ValueError):
    """``cancel_run``/``retry_run`` on a run whose status does not allow it."""


class BlockNotFoundError(AIMemoryError, LookupError):
    """An edit, history or restore named a block the subject does not have."""


class SubjectNotFoundError(AIMemoryError, LookupError):
    """An operation that needs an existing subject got an unknown id."""


class SubjectExistsError(AIMemoryError, ValueError):
    """``initialize_user_memory``/``initialize_subject`` of a subject that exists, without ``reset``.

    The message is 0.2.0's, word for word (``noun`` is ``user`` or ``subject``).
    """

    def __init__(self, agent_id: str, subject_id: str, noun: str = "subject") -> None:
        self.agent_id = agent_id
        self.subject_id = subject_id
        self.noun = noun
        memory = " memory" if noun == "user" else ""
        super().__init__(
            f"Agent {agent_id} already exists for {noun} {subject_id}. Cannot re-initialize{memory} unless reset=True."
        )


class MemoryClosedError(AIMemoryError, RuntimeError):
    """A call on a ``Memory`` after ``close()``."""


class StoreError(AIMemoryError, RuntimeError):
    """The store cannot be opened or used: the message names the path (or URL) and the cause."""

    def __init__(self, path: str, cause: str) -> None:
        self.path = path
        self.cause = cause
        super().__init__(f"store {path}: {cause}")


class ServerUnreachableError(AIMemoryError, ConnectionError):
    """The ``letta`` or ``remote`` engine's server did not answer; the message names its URL."""

    def __init__(self, url: str, cause: str) -> None:
        self.url = url
        self.cause = cause
        super().__init__(f"cannot reach {url}: {cause}")


class ServerError(AIMemoryError, RuntimeError):
    """The ``remote`` engine's server refused a request for a reason no other type names.

    A refused key (401), a rate limit still in force after the retry budget
    (429), an unexpected answer (5xx, a proxy's page): ``status`` and ``type``
    are the server's, and the message names the URL.
    """

    def __init__(self, url: str, status: int, type: str, message: str) -> None:
        self.url = url
        self.status = status
        self.type = type
        super().__init__(f"{url}: {status} {type}: {message}")


class UnsupportedByEngineError(AIMemoryError):
    """The selected engine cannot do this (e.g. block history on ``letta``).

    The message names the engine and the missing capability.
    """

    def __init__(self, engine: str, capability: str) -> None:
        self.engine = engine
        self.capability = capability
        super().__init__(f"The '{engine}' engine does not support {capability}")


class LearnerError(AIMemoryError):
    """A learner pass could not finish; the run is marked ``failed`` with it."""

    def __init__(
        self,
        message: str,
        *,
        stop_reason: str | None = None,
        stats: dict[str, int] | None = None,
        trace: list[dict[str, Any]] | None = None,
    ) -> None:
        self.stop_reason = stop_reason
        self.stats = stats or {}  # llm_calls / prompt_tokens / completion_tokens spent before failing
        self.trace = trace or []  # the steps the pass took before it failed (the inspector shows them)
        super().__init__(message)
