"""``/healthz`` (the process answers; no key needed), ``/readyz`` (store and workers) and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from . import api
from .metrics import CONTENT_TYPE
from .state import state_of

router = APIRouter()


@router.get("/healthz", response_model=api.Status, summary="liveness (no key needed)")
async def healthz() -> Response:
    """The process is up and answering."""
    return Response(api.Status(status="ok").model_dump_json(), media_type="application/json")


@router.get("/readyz", response_model=api.Status, responses={503: {"model": api.Status}}, summary="readiness")
def readyz(request: Request) -> Response:
    """Ready when the store answers a query and the workers run, if this process has any (else 503 naming what)."""
    engine = state_of(request).engine
    checks: dict[str, str] = {}
    try:
        engine.store.get_meta("embedder")
        checks["store"] = "ok"
    except Exception as exc:  # what readiness reports, not a failure of the probe
        checks["store"] = f"unavailable: {exc}"
    if engine.settings.background:
        checks["workers"] = "ok" if engine.pool.running else "not running"
    else:  # a serving-only process (serve --workers 0): other processes learn
        checks["workers"] = "ok"
    state = "ok" if all(v == "ok" for v in checks.values()) else "unavailable"
    body = api.Status(status=state, checks=checks).model_dump_json()
    return Response(body, 200 if state == "ok" else 503, media_type="application/json")


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
def metrics(request: Request) -> Response:
    """Requests and latency by route and status, runs by status, queue depth, LLM calls and tokens."""
    return Response(state_of(request).metrics.render(), media_type=CONTENT_TYPE)
