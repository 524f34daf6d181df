"""Service identity and user delegation between Fanbank processes (DESIGN.md "Edge").

Every caller signs each call with its own key: HMAC-SHA256 over (caller, user, roles, method,
expiry). A service believes the user id and roles only when the signature verifies and the caller is
allowed to act for users. A caller with no user acts as itself: an internal service has a service's
rights; a user delegate that is not internal (the edge) is an anonymous visitor — it may read what is
public and use RPCs whose own secret authorizes them (a signed webhook, an overlay token), and is
refused everything that needs a user or a service.
The expiry is wall-clock time: it bounds replay of captured metadata between hosts, which is a
transport concern, not business time (the controllable clock does not apply to it).
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from shared.config import Settings
from shared.errors import denied, unauthenticated

CALLER = "x-fanbank-caller"
USER = "x-fanbank-user"
ROLES = "x-fanbank-roles"
EXPIRES = "x-fanbank-expires"
SIGNATURE = "x-fanbank-signature"

ROLE_ADMIN = "admin"
ROLE_CREATOR = "creator"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a call is for: a service acting as itself (user is None) or on behalf of a user."""

    caller: str
    user: str | None
    roles: frozenset[str]
    internal: bool

    @property
    def is_admin(self) -> bool:
        return self.user is not None and ROLE_ADMIN in self.roles

    @property
    def is_service(self) -> bool:
        return self.user is None and self.internal

    @property
    def is_anonymous(self) -> bool:
        """The edge serving a visitor with no bearer token (a public route, a webhook, an overlay)."""
        return self.user is None and not self.internal

    @property
    def is_privileged(self) -> bool:
        """An internal service acting as itself, or a user with the admin role."""
        return self.is_service or self.is_admin

    @property
    def scope(self) -> str:
        """Caller-chosen ids are scoped to the calling service, or to the user on a user's call."""
        return f"user:{self.user}" if self.user else f"service:{self.caller}"


current_principal: contextvars.ContextVar[Principal] = contextvars.ContextVar("fanbank_principal")
# Set by a service that is acting for a user when it calls another service (the edge does this).
acting_user: contextvars.ContextVar[tuple[str, tuple[str, ...]] | None] = contextvars.ContextVar(
    "fanbank_acting_user", default=None
)


def _payload(caller: str, user: str, roles: str, method: str, expires: str) -> bytes:
    return "\n".join((caller, user, roles, method, expires)).encode()


def sign(
    key: bytes,
    caller: str,
    method: str,
    user: str | None = None,
    roles: tuple[str, ...] = (),
    ttl_seconds: int = 60,
    now: float | None = None,
) -> list[tuple[str, str]]:
    expires = str(int((now if now is not None else time.time()) + ttl_seconds))
    roles_text = ",".join(sorted(roles))
    user_text = user or ""
    mac = hmac.new(key, _payload(caller, user_text, roles_text, method, expires), hashlib.sha256).hexdigest()
    metadata = [(CALLER, caller), (EXPIRES, expires), (SIGNATURE, mac)]
    if user:
        metadata += [(USER, user_text), (ROLES, roles_text)]
    return metadata


def verify(settings: Settings, metadata: dict[str, str], method: str, now: float | None = None) -> Principal:
    caller = metadata.get(CALLER)
    signature = metadata.get(SIGNATURE)
    expires = metadata.get(EXPIRES)
    if not caller or not signature or not expires:
        raise unauthenticated("UNSIGNED_CALL", "call carries no service signature")
    key = settings.service_keys.get(caller)
    if key is None:
        raise unauthenticated("UNKNOWN_CALLER", f"caller {caller!r} has no key here")
    user = metadata.get(USER, "")
    roles = metadata.get(ROLES, "")
    expected = hmac.new(key, _payload(caller, user, roles, method, expires), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise unauthenticated("BAD_SIGNATURE", "service signature does not verify")
    try:
        expires_at = int(expires)
    except ValueError:
        raise unauthenticated("BAD_SIGNATURE", "malformed expiry") from None
    if expires_at < (now if now is not None else time.time()):
        raise unauthenticated("SIGNATURE_EXPIRED", "service signature has expired")
    internal = caller in settings.internal_callers
    if user:
        if caller not in settings.user_delegates:
            raise unauthenticated("CALLER_MAY_NOT_ACT_FOR_USERS", f"{caller!r} may not act for users")
        return Principal(caller, user, frozenset(r for r in roles.split(",") if r), internal)
    if not internal:
        if caller not in settings.user_delegates:
            raise unauthenticated("CALLER_NOT_INTERNAL", f"{caller!r} may only call on behalf of a user")
        return Principal(caller, None, frozenset(), False)  # an anonymous visitor at the edge
    return Principal(caller, None, frozenset(), True)


async def as_itself(call: Callable[[], Awaitable[T]]) -> T:
    """Runs `call` (which makes outgoing calls) with no acting user, so they are signed as this
    service alone: a service pays and reads as itself, never as the user whose request it serves,
    and the ids it chooses are scoped to it."""
    token = acting_user.set(None)
    try:
        return await call()
    finally:
        acting_user.reset(token)


def principal() -> Principal:
    """Who the RPC being served is for (set by the runtime before the servicer runs)."""
    return current_principal.get()


def require_service(who: Principal, what: str) -> None:
    if not who.is_service:
        raise denied("SERVICE_ONLY", f"{what} is for internal services only")


def require_service_or_anonymous(who: Principal, what: str) -> None:
    """For RPCs whose request carries its own authority (a provider's signature, an overlay token):
    internal services, and the edge handing on an anonymous visitor's request. Never a user."""
    if not (who.is_service or who.is_anonymous):
        raise denied("SERVICE_ONLY", f"{what} is for internal services and the edge only")


def require_privileged(who: Principal, what: str) -> None:
    if not who.is_privileged:
        raise denied("ADMIN_ONLY", f"{what} needs the admin role")
