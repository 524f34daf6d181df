"""Paging every List RPC does the same way: a page size checked and bounded, and an opaque page token
(urlsafe base64 of `|`-joined parts: the last row's sort key, then whatever the listing binds, such
as a filter) that is refused as INVALID_PAGE_TOKEN when it is not one this service wrote.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt

from shared.errors import DomainError, invalid
from shared.validate import check_id

MAX_PAGE_TOKEN_CHARS = 512


def page_size(asked: int, default: int, maximum: int, accepted: int | None = None) -> int:
    """0 asks for `default`; a size above `maximum` gets `maximum`; negative or above `accepted`
    (default: `maximum`) is INVALID_PAGE_SIZE."""
    accepted = maximum if accepted is None else accepted
    if not 0 <= asked <= accepted:
        raise invalid("INVALID_PAGE_SIZE", f"page_size must be 0..{accepted}", field="page_size")
    return min(asked or default, maximum)


def encode_token(*parts: str) -> str:
    return base64.urlsafe_b64encode("|".join(parts).encode()).decode()


def _malformed() -> DomainError:
    return invalid("INVALID_PAGE_TOKEN", "page_token is malformed", field="page_token")


def decode_token(token: str, count: int) -> list[str]:
    """The `count` parts of a token from encode_token."""
    try:
        if len(token) > MAX_PAGE_TOKEN_CHARS:
            raise ValueError
        parts = base64.urlsafe_b64decode(token.encode()).decode().split("|")
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise _malformed() from None
    if len(parts) != count:
        raise _malformed()
    return parts


def decode_keyset(token: str, extra: int = 0) -> tuple[dt.datetime, str, list[str]]:
    """A (time, id) keyset position, newest-first listings' usual key, and `extra` bound parts."""
    stamp, last_id, *rest = decode_token(token, 2 + extra)
    try:
        return dt.datetime.fromisoformat(stamp), check_id("page_token", last_id), rest
    except (ValueError, DomainError):
        raise _malformed() from None
