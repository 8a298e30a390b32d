"""Settings from constructor arguments and environment variables (SPEC §3), resolved once.

An argument beats its variable; ``auto`` choices are resolved by the engine
that uses them and logged there.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MODEL = "gpt-4.1-mini"
DEFAULT_LETTA_MODEL = "openai/gpt-4.1"


class Settings(BaseModel):
    """Every option of ``Memory(...)``; see the README's configuration table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    engine: str | None = None
    path: str | None = None
    llm_api_key: str | None = None
    llm_base_url: str | None = None
    model: str = DEFAULT_MODEL
    learner: str = "auto"
    embedder: str = "auto"
    api_key: str | None = None  # Letta
    base_url: str | None = None  # Letta
    letta_model: str = DEFAULT_LETTA_MODEL
    letta_embedding: str | None = None
    background: bool = True
    workers: int = Field(default=4, ge=1, le=256)
    max_pass_chars: int = Field(default=24_000, ge=1000)
    max_steps: int = Field(default=10, ge=1)
    history_limit: int = Field(default=100, ge=0)
    llm_timeout: float = Field(default=60.0, gt=0)
    llm_retry_budget: float = Field(default=120.0, ge=0)
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_interval: float = Field(default=0.5, gt=0)
    busy_timeout: float = Field(default=60.0, gt=0)
    secure_delete: bool = True
    close_timeout: float = Field(default=30.0, ge=0)

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_api_key or self.llm_base_url)


_ENV = {
    "engine": "AI_MEMORY_ENGINE",
    "path": "AI_MEMORY_PATH",
    "llm_api_key": "OPENAI_API_KEY",
    "llm_base_url": "OPENAI_BASE_URL",
    "model": "AI_MEMORY_MODEL",
    "learner": "AI_MEMORY_LEARNER",
    "embedder": "AI_MEMORY_EMBEDDER",
    "api_key": "LETTA_API_KEY",
    "base_url": "LETTA_BASE_URL",
    "letta_model": "AI_MEMORY_LETTA_MODEL",
    "letta_embedding": "AI_MEMORY_LETTA_EMBEDDING",
}


def resolve(api_key: str | None = None, **options: Any) -> Settings:
    """Merge arguments over environment variables; unknown options are a TypeError naming them."""
    unknown = set(options) - set(Settings.model_fields)
    if unknown:
        raise TypeError(f"Memory() got unexpected option(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    for field, var in _ENV.items():
        env = os.environ.get(var)
        if env:
            values[field] = env
    if api_key is not None:
        options["api_key"] = api_key
    values.update({k: v for k, v in options.items() if v is not None})
    settings = Settings(**values)
    for field, allowed in (("learner", ("auto", "llm", "offline")), ("engine", (None, "local", "letta"))):
        if getattr(settings, field) not in allowed:
            raise ValueError(
                f"{field} must be one of {', '.join(str(a) for a in allowed if a)}, got {getattr(settings, field)!r}"
            )
    return settings


def choose_engine(settings: Settings) -> str:
    """SPEC §2: ``engine`` > ``AI_MEMORY_ENGINE`` > ``letta`` when a Letta key is set > ``local``."""
    if settings.engine:
        return settings.engine
    return "letta" if settings.api_key else "local"


def default_path() -> Path:
    """Per-user data file: XDG data dir on Linux, Application Support on macOS, LOCALAPPDATA on Windows."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif os.name == "nt":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "ai-memory-sdk" / "memory.db"
