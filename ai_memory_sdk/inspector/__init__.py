"""The inspector: what each subject's memory agent learned and why, in a browser (``ai-memory ui``).

``router(engine_for)`` is a FastAPI ``APIRouter`` over the ``Engine`` protocol
(needs the ``server`` extra). ``ai-memory ui`` serves it alone over the local
engine; an application or the HTTP server mounts it under a prefix::

    app.include_router(inspector.router(inspector.engine_of(memory)), prefix="/ui")
"""

from __future__ import annotations

from .routes import EngineFor, engine_of, router

__all__ = ["EngineFor", "engine_of", "router"]
