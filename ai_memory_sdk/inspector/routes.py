"""The inspector's pages and actions as one FastAPI ``APIRouter``, over any ``Engine``.

``router(engine_for)`` serves the pages from the engine ``engine_for(request)``
returns: ``ai-memory ui`` gives every request the same local engine; the HTTP
server gives each API key its tenant's engine and mounts the router under
``/ui``. Links are built from the router's own mount point, so both work.

Pages are server-rendered (Jinja2, autoescaped: any value from the store is
text on the page) with a small script and style sheet served by the router
itself; nothing comes from another site. State changes (restore a block
version, retry or cancel a run) are POSTs that need the page's CSRF token,
answered with a redirect back to the page.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import resources
from typing import Annotated, Any
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined

from .. import __version__
from .. import _validation as check
from ..engines.base import Engine
from ..errors import AIMemoryError, RunStateError, UnsupportedByEngineError
from ..memory import AsyncMemory, Memory
from ..models import BlockVersion, Run, SubjectSummary
from . import views
from .csrf import FIELD, Csrf, CsrfError

log = logging.getLogger(__name__)

EngineFor = Callable[[Request], Engine]
"""Gives the engine a request may use (the HTTP server: the tenant's engine of the request's API key)."""

PAGE_SIZE = 50
SEARCH_LIMIT = 20
_MAX_FORM = 16 * 1024
_TABS = ("blocks", "runs", "messages", "search")
_STATIC = {
    "inspector.css": "text/css; charset=utf-8",
    "inspector.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make the browser send "Origin: null" with our forms
}


class _PageError(Exception):
    """A request the page cannot answer: shown as an error page with this status and message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("ai_memory_sdk.inspector", "templates"),
        autoescape=True,  # every value is escaped, whatever the template's name
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["took"] = _took
    env.filters["number"] = lambda n: f"{n:,}"
    env.filters["pretty"] = views.pretty
    return env


def _when(dt: datetime | None) -> str:
    if dt is None:
        return "-"
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _took(run: Run) -> str:
    if run.started_at and run.finished_at:
        return f"{(run.finished_at - run.started_at).total_seconds():.2f} s"
    return "-"


async def _form(request: Request) -> dict[str, str] | _PageError:
    """The fields of a posted form (``application/x-www-form-urlencoded``, small), first value of each.

    A body that is not such a form is returned as its error, for the page to show (``_fields``).
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        return _PageError(415, f"expected a form (application/x-www-form-urlencoded), got {kind or 'no content type'}")
    body = await request.body()
    if len(body) > _MAX_FORM:
        return _PageError(413, f"form of {len(body):,} bytes; at most {_MAX_FORM:,}")
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True):
        fields.setdefault(key, value)
    return fields


def _fields(form: dict[str, str] | _PageError) -> dict[str, str]:
    if isinstance(form, _PageError):
        raise form
    return form


Form = Annotated[dict[str, str] | _PageError, Depends(_form)]
_View = tuple[str, dict[str, Any]]  # a template and its context


def engine_of(memory: Memory | AsyncMemory) -> EngineFor:
    """Every request gets this ``Memory``'s engine: the inspector of one application's own store."""
    engine = memory._engine
    return lambda request: engine


def _whole(text: str | None, what: str, default: int | None = None) -> int:
    """A whole number of at least 1 from a query or form field (``default`` when absent), else 400 naming it."""
    if text is None or text == "":
        if default is None:
            raise _PageError(400, f"{what} is missing")
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise _PageError(400, f"{what} must be a whole number of at least 1, got {text!r}")
    return value


def _checked(convert: Callable[[Any], Any], value: Any) -> Any:
    """Run an input check of ``_validation``; its message becomes a 400 page."""
    try:
        return convert(value)
    except (TypeError, ValueError) as exc:
        raise _PageError(400, str(exc)) from None


def router(engine_for: EngineFor, *, secret: bytes | None = None) -> APIRouter:
    """The inspector's routes; mount with ``app.include_router(router(engine_for), prefix="/ui")``.

    ``secret`` signs the CSRF tokens (random per process by default; give one
    when several processes serve the same pages behind a load balancer).
    """
    env = _environment()
    csrf = Csrf(secret)
    api = APIRouter()

    def base(request: Request) -> str:
        return str(request.url_for("inspector_subjects").path)

    def link(request: Request, target: str, /, **params: Any) -> str:
        """``target`` under the router's mount point, with the given query (empty values left out)."""
        query = urlencode({k: v for k, v in params.items() if v is not None and v != ""})
        return base(request) + target + (f"?{query}" if query else "")

    def render(request: Request, engine: Engine, template: str, context: dict[str, Any], status: int = 200) -> Response:
        token, fresh = csrf.token(request)
        html = env.get_template(template).render(
            base=base(request),
            link=lambda target, /, **params: link(request, target, **params),
            csrf_field=FIELD,
            csrf_token=token,
            version=__version__,
            engine_info=_info(engine),
            **context,
        )
        response = HTMLResponse(html, status_code=status, headers=_HEADERS)
        if fresh:
            csrf.set_cookie(response, token, base(request), request.url.scheme == "https")
        return response

    def page(request: Request, build: Callable[[Engine], Response | _View]) -> Response:
        """Answer with what ``build(engine)`` gives (a page to render, a redirect), or an error page.

        Only the errors of the request and of the engine become error pages; a
        fault of the page itself (a template) is a server error, never a 400.
        """
        engine = engine_for(request)
        try:
            out = build(engine)
        except _PageError as exc:
            status, message = exc.status, str(exc)
        except CsrfError as exc:
            status, message = 403, str(exc)
        except UnsupportedByEngineError as exc:
            status, message = 501, str(exc)
        except RunStateError as exc:
            status, message = 409, str(exc)
        except LookupError as exc:
            status, message = 404, str(exc)
        except (ValueError, TypeError) as exc:
            status, message = 400, str(exc)
        except AIMemoryError as exc:
            log.warning("inspector: %s %s failed: %s", request.method, request.url.path, exc)
            status, message = 500, str(exc)
        else:
            return out if isinstance(out, Response) else render(request, engine, *out)
        return render(request, engine, "error.html", {"message": message, "code": status}, status)

    def redirect(url: str) -> Response:
        return RedirectResponse(url, status_code=303, headers=_HEADERS)

    @api.get("/", name="inspector_subjects", response_class=HTMLResponse)
    def subjects(request: Request) -> Response:
        def build(engine: Engine) -> Response | _View:
            q = request.query_params.get("q", "").strip() or None
            number = _whole(request.query_params.get("page"), "page", 1)
            pager = views.Pager(number, PAGE_SIZE, engine.count_subjects(query=q))
            found = engine.list_subjects(query=q, offset=pager.offset, limit=PAGE_SIZE)
            return "subjects.html", {"subjects": found, "q": q or "", "pages": pager}

        return page(request, build)

    @api.get("/subject", name="inspector_subject", response_class=HTMLResponse)
    def subject(request: Request) -> Response:
        def build(engine: Engine) -> Response | _View:
            params = request.query_params
            sid = _checked(check.subject_id, params.get("id"))
            summary = _summary(engine, sid)
            tab = params.get("tab") or "blocks"
            if tab not in _TABS:
                raise _PageError(400, f"tab must be one of {', '.join(_TABS)}, got {tab!r}")
            context: dict[str, Any] = {"sid": sid, "summary": summary, "tab": tab, "notice": _notice(params)}
            number = _whole(params.get("page"), "page", 1)
            if tab == "blocks":
                context["blocks"] = _blocks(engine, sid)
            elif tab == "runs":
                runs = engine.list_runs(sid, None)[::-1]
                pager = views.Pager(number, PAGE_SIZE, len(runs))
                context.update(pages=pager, runs=runs[pager.offset : pager.offset + PAGE_SIZE])
            elif tab == "messages":
                pager = views.Pager(number, PAGE_SIZE, summary.messages)
                # Page 1 is the newest PAGE_SIZE messages; each page reads oldest first, like a conversation.
                newest = engine.get_messages(sid, limit=pager.offset + PAGE_SIZE, before=None, after=None)
                context.update(pages=pager, messages=newest[: max(len(newest) - pager.offset, 0)][-PAGE_SIZE:])
            else:
                context.update(_search(engine, sid, params.get("q"), params.get("tags"), params.get("mode")))
            return "subject.html", context

        return page(request, build)

    @api.get("/run/{run_id}", name="inspector_run", response_class=HTMLResponse)
    def run(request: Request, run_id: str) -> Response:
        def build(engine: Engine) -> Response | _View:
            found = engine.get_run(run_id)
            if found is None:
                raise _PageError(404, f"no run {run_id!r}")
            trace = engine.get_trace(run_id)
            pass_runs = [r for r in (trace or {}).get("runs", []) if isinstance(r, str)] or [run_id]
            histories: dict[str, list[BlockVersion]] | None = None
            try:
                histories = {
                    b.label: engine.block_history(b.subject_id, b.label) for b in engine.list_blocks(found.subject_id)
                }
            except UnsupportedByEngineError:
                pass  # the engine keeps no history (letta): the page says so
            return "run.html", {
                "run": found,
                "messages": engine.run_messages(run_id),
                "trace": trace,
                "pass_runs": [r for r in pass_runs if r != run_id],
                "changes": None if histories is None else views.run_changes(histories, pass_runs),
                "steps": views.steps((trace or {}).get("steps")),
                "edits": views.edits((trace or {}).get("edits")),
                "trace_other": {k: views.pretty(v) for k, v in (trace or {}).items() if k not in _TRACE_SHOWN},
                "notice": _notice(request.query_params),
            }

        return page(request, build)

    @api.post("/subject/restore", name="inspector_restore")
    def restore(request: Request, form: Form) -> Response:
        def build(engine: Engine) -> Response | _View:
            fields = _fields(form)
            csrf.check(request, fields.get(FIELD, ""))
            sid = _checked(check.subject_id, fields.get("id"))
            label = _checked(check.label, fields.get("label"))
            version = _whole(fields.get("version"), "version")
            engine.restore_block(sid, label, version)
            log.info("inspector: restored block %r of subject %r to version %d", label, sid, version)
            url = link(request, "subject", id=sid, tab="blocks", notice="restored", label=label, version=version)
            return redirect(f"{url}#block-{label}")

        return page(request, build)

    def run_action(request: Request, run_id: str, form: dict[str, str] | _PageError, action: str) -> Response:
        def build(engine: Engine) -> Response | _View:
            fields = _fields(form)
            csrf.check(request, fields.get(FIELD, ""))
            found = engine.get_run(run_id)
            if found is None:
                raise _PageError(404, f"no run {run_id!r}")
            if action == "retry":
                engine.retry_run(run_id)
            else:
                engine.cancel_run(run_id)
            log.info("inspector: %s run %s of subject %r", action, run_id, found.subject_id)
            notice = {"retry": "retried", "cancel": "cancelled"}[action]
            if fields.get("next") == "runs":
                return redirect(link(request, "subject", id=found.subject_id, tab="runs", notice=notice, run=run_id))
            return redirect(link(request, f"run/{quote(run_id, safe='')}", notice=notice))

        return page(request, build)

    @api.post("/run/{run_id}/retry", name="inspector_retry")
    def retry(request: Request, run_id: str, form: Form) -> Response:
        return run_action(request, run_id, form, "retry")

    @api.post("/run/{run_id}/cancel", name="inspector_cancel")
    def cancel(request: Request, run_id: str, form: Form) -> Response:
        return run_action(request, run_id, form, "cancel")

    @api.get("/static/{name}", name="inspector_static")
    def static(name: str) -> Response:
        kind = _STATIC.get(name)
        if kind is None:
            return Response("not found", status_code=404, media_type="text/plain", headers=_HEADERS)
        body = resources.files("ai_memory_sdk.inspector").joinpath("static").joinpath(name).read_bytes()
        return Response(body, media_type=kind, headers={**_HEADERS, "Cache-Control": "max-age=3600"})

    return api


_TRACE_SHOWN = frozenset({"kind", "learner", "runs", "steps", "edits"})
_NOTICES = {"restored", "retried", "cancelled"}
_RUN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _info(engine: Engine) -> dict[str, str]:
    try:
        return engine.info()
    except AIMemoryError:
        return {"engine": engine.name}


def _notice(params: Any) -> dict[str, str] | None:
    """What the action before the redirect did, from its fixed code and checked fields (a crafted link cannot
    make the page say something else)."""
    code, label, version, run = (params.get(k, "") for k in ("notice", "label", "version", "run"))
    if code not in _NOTICES or (version and not version.isdigit()) or (run and not _RUN.fullmatch(run)):
        return None
    try:
        if label:
            check.label(label)
    except ValueError:
        return None
    return {"code": code, "label": label, "version": version, "run": run}


def _summary(engine: Engine, sid: str) -> SubjectSummary:
    """The subject's row of ``list_subjects``; ``_PageError`` 404 for a subject the engine does not have."""
    offset = 0
    while True:
        rows = engine.list_subjects(query=sid, offset=offset, limit=200)
        for row in rows:
            if row.subject_id == sid:
                return row
        if len(rows) < 200:
            raise _PageError(404, f"no subject {sid!r}")
        offset += 200


def _blocks(engine: Engine, sid: str) -> list[dict[str, Any]]:
    out = []
    for block in engine.list_blocks(sid):
        try:
            history: list[views.VersionView] | None = views.timeline(engine.block_history(sid, block.label))
        except UnsupportedByEngineError:
            history = None
        out.append({"block": block, "fill": views.fill(len(block.value), block.limit), "history": history})
    return out


def _search(engine: Engine, sid: str, q: str | None, tags: str | None, mode: str | None) -> dict[str, Any]:
    """The search tab: the form's values and, for a query, the results or what was wrong with the form."""
    out: dict[str, Any] = {"q": q or "", "tags": tags or "", "mode": mode or "any", "results": None, "error": None}
    out["search_limit"] = SEARCH_LIMIT
    if not q:
        return out
    tag_list = [t.strip() for t in (tags or "").split(",") if t.strip()]
    try:
        check.query(q)
        check.tags(tag_list)
        if out["mode"] not in ("any", "all"):
            raise ValueError(f"tag match must be 'any' or 'all', got {mode!r}")
    except (TypeError, ValueError) as exc:
        out["error"] = str(exc)
        return out
    out["results"] = engine.search(
        sid, q, tags=tag_list, tag_match_mode=out["mode"], limit=SEARCH_LIMIT, start=None, end=None
    )
    return out
