"""The edge's bearer verification reuses a verified token until it expires, never after."""

from __future__ import annotations

import time

import jwt
import pytest

from services.edge.bearer import User, Verifier
from services.edge.errors import EdgeError
from shared.config import load_settings


def _token(settings, **claims) -> str:
    now = int(time.time())
    body = {"sub": "fan-1", "aud": settings.jwt_audience, "iss": settings.jwt_issuer, "exp": now + 600, "nbf": now}
    body.update(claims)
    return jwt.encode(body, settings.jwt_secret, algorithm="HS256")


def _reason(verifier: Verifier, header: str) -> str:
    with pytest.raises(EdgeError) as error:
        verifier.verify(header)
    return error.value.error.reason


def test_a_verified_token_is_reused_and_an_expired_one_is_checked_again():
    settings = load_settings()
    verifier = Verifier(settings)
    token = _token(settings, roles=["creator"])
    first = verifier.verify(f"Bearer {token}")
    assert first == User("fan-1", ("creator",)) and token in verifier._verified
    assert verifier.verify(f"Bearer {token}") is first  # from the cache
    # A token whose cached expiry has passed is checked again, and refused as expired.
    expired = _token(settings, exp=int(time.time()) - 3600, nbf=int(time.time()) - 7200)
    verifier._verified[expired] = (first, time.time() - 7200, time.time() - 3600)
    assert _reason(verifier, f"Bearer {expired}") == "TOKEN_EXPIRED"
    assert expired not in verifier._verified
    # Refused tokens are never cached.
    forged = jwt.encode({"sub": "fan-1"}, "another-secret-that-is-long-enough-32b", algorithm="HS256")
    assert _reason(verifier, f"Bearer {forged}") == "TOKEN_INVALID"
    assert forged not in verifier._verified
