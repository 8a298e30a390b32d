"""CSRF protection of the inspector's forms: a signed double-submit token and an origin check.

Every page sets a cookie holding ``nonce.signature`` (HMAC of the nonce with
the router's secret) and puts the same token in each form; a POST is accepted
only when the form's token equals the cookie's and the signature holds. A page
of another site can neither read the cookie nor forge a signed one, and the
cookie is ``SameSite=Strict`` besides. A POST whose ``Origin`` names another
host (or is ``null``), or that the browser marks as cross-site
(``Sec-Fetch-Site``), is refused before any of that.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "ai_memory_csrf"
FIELD = "csrf_token"


class CsrfError(Exception):
    """A state-changing request without a valid token (or from another origin): answered 403."""


class Csrf:
    """Issues and checks tokens signed with one secret (random per process unless given)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def _sign(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    def _valid(self, token: str) -> bool:
        nonce, sep, signature = token.partition(".")
        return bool(sep and nonce) and hmac.compare_digest(signature, self._sign(nonce))

    def token(self, request: Request) -> tuple[str, bool]:
        """The token for this browser's forms, and whether the cookie must be (re)set with it."""
        current = request.cookies.get(COOKIE, "")
        if self._valid(current):
            return current, False
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._sign(nonce)}", True

    def set_cookie(self, response: Response, token: str, path: str, secure: bool) -> None:
        response.set_cookie(COOKIE, token, path=path, httponly=True, samesite="strict", secure=secure)

    def check(self, request: Request, form_token: str) -> None:
        """Raise ``CsrfError`` unless the request comes from this site's page with a valid token."""
        origin = request.headers.get("origin")
        if origin and (origin == "null" or urlsplit(origin).netloc != request.headers.get("host", "")):
            raise CsrfError(f"request from another origin ({origin})")
        site = request.headers.get("sec-fetch-site")
        if site and site not in ("same-origin", "none"):
            raise CsrfError(f"request from another site (Sec-Fetch-Site: {site})")
        cookie = request.cookies.get(COOKIE, "")
        if not form_token or not cookie:
            raise CsrfError("missing CSRF token: reload the page and try again")
        if not hmac.compare_digest(form_token, cookie) or not self._valid(cookie):
            raise CsrfError("invalid CSRF token: reload the page and try again")
