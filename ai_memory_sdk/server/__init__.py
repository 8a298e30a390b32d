"""The HTTP server of ``ai-memory serve``: the ``local`` engine for many tenants behind API keys.

``app.create_app`` builds the FastAPI app; ``run.serve`` runs it under
uvicorn with graceful shutdown; ``api`` is the wire format the ``remote``
engine shares (it needs only pydantic, so importing it does not need the
``server`` extra). Reference: docs/server.md.
"""
