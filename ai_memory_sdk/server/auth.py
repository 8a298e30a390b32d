"""API keys: how they are made, stored, checked, and which tenant they name.

A key is ``aim_`` plus 43 URL-safe characters (256 random bits). The store
keeps only its SHA-256 digest; a request's key is hashed and looked up by that
digest. Why this is safe without a slow hash or a constant-time scan: the key
has 256 bits of entropy, so its digest cannot be reversed or guessed (a slow
password hash only helps low-entropy secrets), and the lookup compares digests,
not keys, so whatever timing the index comparison leaks is about the digest of
a stored key, which does not help anyone build a key that hashes to it (that
would take a preimage of SHA-256). A plain, unsalted digest keeps the lookup
one indexed read, the same in every process sharing the store (no secret to
distribute between them).

The key's name is its tenant: everything a request does happens in that
tenant's view of the store (``Store.scoped``).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets

from ..store.base import Store

PREFIX = "aim_"
_KEY_RE = re.compile(r"aim_[A-Za-z0-9_-]{43}\Z")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")


def key_name(value: str) -> str:
    """A key's name (its tenant): 1-64 characters, letters, digits and ``_.@-``, not starting with a symbol."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise ValueError(
            f"a key name must be 1-64 characters of letters, digits and _.@- starting with a letter or digit,"
            f" got {value!r}"
        )
    return value


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("ascii")).hexdigest()


def create_key(store: Store, name: str) -> str:
    """Make a key for tenant ``name`` and store its digest; returns the key (shown once, never stored)."""
    key = PREFIX + secrets.token_urlsafe(32)
    store.create_key(key_name(name), digest(key))
    return key


def bearer(header: str | None) -> str | None:
    """The key of an ``Authorization`` header; None when the header carries none.

    ``Bearer <key>`` for programs; ``Basic`` with the key as the password (any
    user name) for a browser, which can only send credentials it asked the user
    for (the inspector at ``/ui``).
    """
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "basic":
        try:
            value = base64.b64decode(value, validate=True).decode("ascii").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return None
    elif scheme.lower() != "bearer":
        return None
    return value if _KEY_RE.match(value) else None


def tenant_of(store: Store, key: str) -> str | None:
    """The tenant of an active key, or None (unknown or revoked)."""
    return store.key_tenant(digest(key))
