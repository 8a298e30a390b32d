"""ai_memory_sdk: long-term memory for AI applications through learned context blocks.

``Memory`` (and its async twin ``AsyncMemory``) is the whole public surface;
see the README for the quickstart and docs/ for the reference.
"""

from .errors import (
    AIMemoryError,
    BlockNotFoundError,
    LearnerError,
    MemoryClosedError,
    RunCancelledError,
    RunFailedError,
    RunNotFoundError,
    RunStateError,
    ServerError,
    ServerUnreachableError,
    StoreError,
    SubjectExistsError,
    SubjectNotFoundError,
    UnsupportedByEngineError,
)
from .memory import AsyncMemory, Memory
from .models import Block, BlockVersion, Run, SearchResult, StoredMessage, SubjectSummary

__version__ = "0.4.0"

__all__ = [
    "AIMemoryError",
    "AsyncMemory",
    "Block",
    "BlockNotFoundError",
    "BlockVersion",
    "LearnerError",
    "Memory",
    "MemoryClosedError",
    "Run",
    "RunCancelledError",
    "RunFailedError",
    "RunNotFoundError",
    "RunStateError",
    "SearchResult",
    "ServerError",
    "ServerUnreachableError",
    "StoreError",
    "StoredMessage",
    "SubjectExistsError",
    "SubjectNotFoundError",
    "SubjectSummary",
    "UnsupportedByEngineError",
]
