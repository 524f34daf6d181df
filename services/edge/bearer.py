"""The user's bearer JWT, verified at the edge (HS256 shared secret or RS256 public key).

The user id (`sub`) and roles travel on to services inside the edge's signed metadata, whose
payload joins fields with newlines and roles with commas; both are held to a plain character set
here so that a token can never smuggle a second user or role into that payload.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from services.edge.errors import EdgeError, unauthenticated
from shared.config import DEV_JWT_SECRET, ConfigError, Settings

# Clock skew tolerated between the token issuer and this host.
LEEWAY_SECONDS = 30
MAX_TOKEN_CHARS = 8192
MAX_ROLES = 32
MAX_VERIFIED_TOKENS = 50_000
# Same alphabet as the ids services accept, so a user id can name its own accounts.
_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-/]{0,127}")
_ROLE = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,63}")
# RFC 7518 §3.2: an HMAC key at least as long as the hash.
_MIN_SECRET_BYTES = 32


@dataclass(frozen=True, slots=True)
class User:
    id: str
    roles: tuple[str, ...]


class Verifier:
    def __init__(self, settings: Settings):
        self._verified: dict[str, tuple[User, float, float]] = {}
        self.algorithm = settings.jwt_algorithm
        self.audience = settings.jwt_audience
        self.issuer = settings.jwt_issuer
        self.roles_claim = settings.jwt_roles_claim
        if self.algorithm == "HS256":
            if len(settings.jwt_secret.encode()) < _MIN_SECRET_BYTES:
                raise ConfigError(f"FANBANK_JWT_SECRET must be at least {_MIN_SECRET_BYTES} bytes")
            self.key = settings.jwt_secret
            self.using_dev_secret = settings.jwt_secret == DEV_JWT_SECRET
        else:
            self.key = public_key(settings.jwt_public_key)
            self.using_dev_secret = False

    def verify(self, authorization: str | None) -> User:
        if not authorization:
            raise token_missing()
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated("TOKEN_MISSING", "the Authorization header must be Bearer <token>", "invalid_request")
        if len(token) > MAX_TOKEN_CHARS:
            raise unauthenticated("TOKEN_INVALID", "the token is too long")
        cached = self._verified.get(token)
        if cached is not None:
            user, not_before, expires = cached
            if not_before - LEEWAY_SECONDS <= time.time() <= expires + LEEWAY_SECONDS:
                return user
            del self._verified[token]  # expired meanwhile: the full check below says so
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("TOKEN_EXPIRED", "the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthenticated("TOKEN_NOT_YET_VALID", "the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise unauthenticated("TOKEN_WRONG_AUDIENCE", "the token is not meant for this audience") from None
        except jwt.InvalidIssuerError:
            raise unauthenticated(
                "TOKEN_WRONG_ISSUER", "the token comes from an issuer this edge does not trust"
            ) from None
        except jwt.InvalidTokenError as error:
            # PyJWT's messages name only the failed check, never the key or the token.
            raise unauthenticated("TOKEN_INVALID", f"the token does not verify ({_plain(str(error))})") from None
        user = User(_user_id(claims.get("sub")), _roles(claims.get(self.roles_claim)))
        # A token verified once is the same token until it expires: a client's next requests skip
        # the signature check (bounded; the map is emptied when full).
        if len(self._verified) >= MAX_VERIFIED_TOKENS:
            self._verified.clear()
        self._verified[token] = (user, _number(claims.get("nbf"), float("-inf")), _number(claims["exp"], 0.0))
        return user


def _number(value, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _user_id(sub) -> str:
    if not isinstance(sub, str) or not _USER_ID.fullmatch(sub):
        raise unauthenticated("TOKEN_INVALID", "the token subject is not a valid user id")
    return sub


def _roles(value) -> tuple[str, ...]:
    if value is None:
        return ()
    roles = value.split() if isinstance(value, str) else value
    if (
        not isinstance(roles, list)
        or len(roles) > MAX_ROLES
        or not all(isinstance(r, str) and _ROLE.fullmatch(r) for r in roles)
    ):
        raise unauthenticated("TOKEN_INVALID", "the token roles claim is malformed")
    return tuple(sorted(set(roles)))


def _plain(text: str) -> str:
    """Safe inside the quoted error_description of WWW-Authenticate."""
    return re.sub(r"[^A-Za-z0-9 _.,:()-]", "", text)[:120]


def token_missing() -> EdgeError:
    """401 for a request that sent no token to a route that is not public."""
    return unauthenticated("TOKEN_MISSING", "this route needs an Authorization: Bearer token", error=None)


def public_key(value: str | None) -> RSAPublicKey:
    """FANBANK_JWT_PUBLIC_KEY is the PEM itself or @path to a file holding it; parsed once here."""
    if not value:
        raise ConfigError("FANBANK_JWT_ALGORITHM=RS256 needs FANBANK_JWT_PUBLIC_KEY (PEM text or @path)")
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text()
        except OSError as error:
            raise ConfigError(f"FANBANK_JWT_PUBLIC_KEY: cannot read {value[1:]!r}: {error}") from None
    try:
        key = load_pem_public_key(value.encode())
    except ValueError:
        raise ConfigError("FANBANK_JWT_PUBLIC_KEY is not a PEM public key") from None
    if not isinstance(key, RSAPublicKey):
        raise ConfigError("FANBANK_JWT_PUBLIC_KEY must be an RSA key for RS256")
    return key
