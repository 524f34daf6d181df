"""Page sizes and page tokens, as every List RPC checks them (shared/paging.py)."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from shared import paging
from shared.errors import DomainError


def _reason(fn, *args, **kwargs) -> str:
    with pytest.raises(DomainError) as error:
        fn(*args, **kwargs)
    return error.value.reason


def test_page_size():
    assert paging.page_size(0, 20, 100) == 20
    assert paging.page_size(7, 20, 100) == 7
    assert paging.page_size(500, 20, 100, accepted=1000) == 100  # accepted, then bounded
    assert _reason(paging.page_size, 101, 20, 100) == "INVALID_PAGE_SIZE"
    assert _reason(paging.page_size, -1, 20, 100, accepted=1000) == "INVALID_PAGE_SIZE"


def test_keyset_tokens_round_trip_and_refuse_anything_else():
    at = dt.datetime(2033, 1, 2, 3, 4, 5, 678, tzinfo=dt.UTC)
    token = paging.encode_token(at.isoformat(), "call-1", "ACTIVE")
    assert paging.decode_keyset(token, extra=1) == (at, "call-1", ["ACTIVE"])
    bad = [
        "not base64!",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        paging.encode_token(at.isoformat(), "call-1"),  # a part missing
        paging.encode_token("yesterday", "call-1", "ACTIVE"),
        paging.encode_token(at.isoformat(), "not an id", "ACTIVE"),
        "A" * (paging.MAX_PAGE_TOKEN_CHARS + 1),
    ]
    for token in bad:
        assert _reason(paging.decode_keyset, token, extra=1) == "INVALID_PAGE_TOKEN", token
