"""Settings from constructor arguments and environment variables, resolved once (docs/configuration.md).

An argument beats its variable; ``auto`` choices are resolved by the engine
that uses them and logged there. A bad value is a ``ValueError``/``TypeError``
naming the argument or the variable it came from.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from typing_extensions import TypedDict

DEFAULT_MODEL = "gpt-4.1-mini"
DEFAULT_LETTA_MODEL = "openai/gpt-4.1"


class Options(TypedDict, total=False):
    """The keyword options of ``Memory(...)`` and ``AsyncMemory(...)`` (docs/configuration.md).

    A missing key, or ``None``, means "not given": the environment variable or
    the default applies. Exception: ``consolidate_at=None`` turns automatic
    consolidation off.
    """

    engine: Literal["local", "letta", "remote"] | None
    path: str | os.PathLike[str] | None
    server_url: str | None
    server_api_key: str | None
    llm_api_key: str | None
    llm_base_url: str | None
    model: str | None
    learner: Literal["auto", "llm", "offline"] | None
    embedder: str | None
    base_url: str | None
    letta_model: str | None
    letta_embedding: str | None
    background: bool | None
    workers: int | None
    max_pass_chars: int | None
    max_steps: int | None
    history_limit: int | None
    llm_timeout: float | None
    llm_retry_budget: float | None
    lease_seconds: float | None
    poll_interval: float | None
    busy_timeout: float | None
    secure_delete: bool | None
    close_timeout: float | None
    consolidate_at: float | None
    trace: bool | None


class Settings(BaseModel):
    """Every option of ``Memory(...)``; see docs/configuration.md."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    engine: Literal["local", "letta", "remote"] | None = None
    path: str | None = None
    server_url: str | None = None
    server_api_key: str | None = None
    llm_api_key: str | None = None
    llm_base_url: str | None = None
    model: str = DEFAULT_MODEL
    learner: Literal["auto", "llm", "offline"] = "auto"
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
    lease_seconds: float = Field(default=30.0, gt=0)
    poll_interval: float = Field(default=0.5, gt=0)
    busy_timeout: float = Field(default=60.0, gt=0)
    secure_delete: bool = True
    close_timeout: float = Field(default=30.0, ge=0)
    consolidate_at: float | None = Field(default=0.9, gt=0, le=1)
    trace: bool = True

    @field_validator("embedder")
    @classmethod
    def _embedder_spec(cls, value: str) -> str:
        kind, sep, name = value.partition(":")
        if value in ("auto", "none") or (sep and name and kind in ("openai", "sentence-transformers")):
            return value
        raise ValueError("must be 'auto', 'none', 'openai:<model>' or 'sentence-transformers:<name or path>'")

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_api_key or self.llm_base_url)


ENV_VARS = {
    "engine": "AI_MEMORY_ENGINE",
    "path": "AI_MEMORY_PATH",
    "server_url": "AI_MEMORY_SERVER_URL",
    "server_api_key": "AI_MEMORY_SERVER_API_KEY",
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


_NONE_TURNS_OFF = frozenset({"consolidate_at"})  # None given for these means "off", not "not given"


def resolve(api_key: str | None = None, **options: Any) -> Settings:
    """Merge arguments over environment variables into ``Settings``.

    An unknown option is a ``TypeError`` naming it; a bad value a
    ``ValueError`` naming the argument, or the variable it came from.
    """
    unknown = set(options) - set(Settings.model_fields)
    if unknown:
        raise TypeError(f"Memory() got unexpected option(s): {', '.join(sorted(unknown))}")
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for field, var in ENV_VARS.items():
        env = os.environ.get(var)
        if env:
            values[field] = env
            source[field] = f"environment variable {var}"
    if api_key is not None:
        options["api_key"] = api_key
    for key, value in options.items():
        if value is not None or key in _NONE_TURNS_OFF:
            values[key] = value
            source[key] = f"argument {key}"
    if "path" in values:
        values["path"] = _store_path(values["path"], source["path"])
    try:
        return Settings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        where = source.get(field, f"argument {field}")
        raise ValueError(f"{where}: {_explain(err)}, got {values.get(field)!r}") from None


def _store_path(value: Any, where: str) -> str:
    """A store path as a string: ``os.PathLike`` accepted, ``~`` expanded (URLs and ``:memory:`` kept)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value:
        raise TypeError(f"{where}: must be a file path, ':memory:' or a postgresql:// URL, got {value!r}")
    if value == ":memory:" or "://" in value:
        return value
    return os.path.expanduser(value)


def _explain(err: Any) -> str:
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()), "")
        return f"must be {op} {bound}"
    if kind.startswith(("int_", "float_")):
        return "must be a number" if kind.startswith("float") else "must be an integer"
    if kind.startswith("bool"):
        return "must be true or false"
    if kind == "value_error":
        return str(ctx.get("error", err.get("msg", "is not valid")))
    return str(err.get("msg", "is not valid"))


def choose_engine(settings: Settings) -> str:
    """``engine`` > ``AI_MEMORY_ENGINE`` > ``remote`` with a server URL > ``letta`` with a Letta key > ``local``."""
    if settings.engine:
        return settings.engine
    if settings.server_url:
        return "remote"
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
