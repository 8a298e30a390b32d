"""Which subjects a server speaks for, and how their blocks are named as resources (``memory://<subject>/<label>``)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, unquote

from .. import _validation as check

SCHEME = "memory://"


@dataclass(frozen=True)
class Scope:
    """One subject (tools take no subject argument), or any subject (``multi``: tools take ``subject_id``).

    A single-subject server never reaches another subject's data: its tools
    have no argument for it, and URIs and run ids of other subjects are
    refused as not found.
    """

    default: str | None
    multi: bool = False

    def __post_init__(self) -> None:
        if not self.multi and self.default is None:
            raise ValueError("a single-subject server needs its subject")

    def subject(self, given: str | None) -> str:
        """The subject a call acts for: the one given (multi-subject), else the default."""
        if given is None:
            if self.default is None:
                raise ValueError("subject_id is required: this server serves several subjects and has no default")
            return self.default
        sid = check.subject_id(given)
        if not self.allows(sid):
            raise LookupError(f"this server serves subject {self.default!r} only, not {sid!r}")
        return sid

    def allows(self, subject_id: str) -> bool:
        return self.multi or subject_id == self.default

    @property
    def listed(self) -> list[str]:
        """The subjects whose blocks ``resources/list`` shows (others are read through the URI template)."""
        return [self.default] if self.default is not None else []


def block_uri(subject_id: str, label: str) -> str:
    """The resource URI of a block; the subject is percent-encoded (ids may hold ``/``, ``@``, spaces)."""
    return f"{SCHEME}{quote(subject_id, safe='')}/{label}"


def parse_block_uri(uri: str) -> tuple[str, str]:
    """``(subject_id, label)`` of a block URI; ``ValueError`` naming the expected form otherwise."""
    subject_part, sep, label = uri.removeprefix(SCHEME).partition("/")
    if not uri.startswith(SCHEME) or not sep or not subject_part:
        raise ValueError(f"not a memory block URI: {uri!r} (expected {SCHEME}<subject>/<label>)")
    return check.subject_id(unquote(subject_part), "the URI's subject"), check.label(label)
