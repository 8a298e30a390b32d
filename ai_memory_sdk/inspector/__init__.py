"""The inspector: what each subject's memory agent learned and why, in a browser (``ai-memory ui``).

``router(engine_for)`` is a FastAPI ``APIRouter`` over the ``Engine`` protocol
(needs the ``server`` extra). ``ai-memory ui`` serves it alone over the local
engine; an application or the HTTP server mounts it under a prefix::

    app.include_router(inspector.router(lambda request: engine), prefix="/ui")
"""

from __future__ import annotations

from .routes import EngineFor, router

__all__ = ["EngineFor", "router"]
