"""Outgoing gRPC channels: every call is signed with this process's identity (and the user it acts
for, when the edge sets one), carries a deadline, and is retried on UNAVAILABLE by gRPC's own retry
policy. Every Fanbank RPC is either a read or carries a request id, so a retry cannot apply twice.

A service's address may name several replicas (`FANBANK_WALLET_ADDR=dns:///wallet:50051` resolving
to each replica, or `ipv4:10.0.0.5:50051,10.0.0.6:50051`): calls are spread over them round robin,
one connection each. gRPC's default, pick_first, would send every call of a process to one replica
(DESIGN.md "Runtime": N replicas side by side).
"""

from __future__ import annotations

import json
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared import auth, logs
from shared.config import Settings

DEFAULT_DEADLINE_SECONDS = 10.0
# Signatures kept for reuse per channel (method × user × roles); the map is emptied when full.
MAX_CACHED_SIGNATURES = 10_000

_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


class _Signer:
    def __init__(self, settings: Settings, identity: str, deadline_seconds: float):
        self.key = settings.key_for(identity)
        self.identity = identity
        self.ttl = settings.signature_ttl_seconds
        self.deadline = deadline_seconds
        self._signatures: dict[tuple, tuple[float, list[tuple[str, str]]]] = {}

    def _signature(self, method: str, user: str | None, roles: tuple[str, ...]) -> list[tuple[str, str]]:
        """A signature is valid for its TTL: it is reused for the first half of it (per method, user
        and roles), so a busy caller computes one HMAC per half-TTL rather than one per call."""
        now = time.time()
        key = (method, user, roles)
        cached = self._signatures.get(key)
        if cached is not None and now < cached[0]:
            return cached[1]
        if len(self._signatures) >= MAX_CACHED_SIGNATURES:
            self._signatures.clear()
        metadata = auth.sign(self.key, self.identity, method, user, roles, self.ttl, now=now)
        self._signatures[key] = (now + self.ttl / 2, metadata)
        return metadata

    def metadata(self, method: str, given) -> list[tuple[str, str]]:
        acting = auth.acting_user.get()
        user, roles = acting if acting else (None, ())
        metadata = list(given or [])
        metadata += self._signature(method, user, tuple(roles))
        rid = logs.request_id.get()
        if rid and not any(k == "x-request-id" for k, _ in metadata):
            metadata.append(("x-request-id", rid))
        return metadata


class _Signed:
    """A multi-callable that signs each call and gives it the channel's deadline. Not a gRPC client
    interceptor: grpc.aio runs every intercepted call in an extra task, a measurable share of a
    forwarding process such as the edge."""

    __slots__ = ("inner", "method", "signer")

    def __init__(self, inner, method, signer: _Signer):
        self.inner = inner
        self.method = method.decode() if isinstance(method, bytes) else method
        self.signer = signer

    def __call__(self, request, *, timeout=None, metadata=None, **kwargs):
        return self.inner(
            request,
            timeout=self.signer.deadline if timeout is None else timeout,
            metadata=self.signer.metadata(self.method, metadata),
            **kwargs,
        )


class SignedChannel:
    """A grpc.aio channel whose unary and server-streaming calls are signed (see `channel`)."""

    def __init__(self, inner: grpc.aio.Channel, signer: _Signer):
        self._inner = inner
        self._signer = signer

    def unary_unary(self, method, *args, **kwargs):
        return _Signed(self._inner.unary_unary(method, *args, **kwargs), method, self._signer)

    def unary_stream(self, method, *args, **kwargs):
        return _Signed(self._inner.unary_stream(method, *args, **kwargs), method, self._signer)

    def __getattr__(self, name):  # close, channel_ready, get_state, …
        return getattr(self._inner, name)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self._inner.close()


def channel(
    settings: Settings,
    target: str,
    identity: str | None = None,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
) -> SignedChannel:
    """A channel whose calls are signed as `identity` (default: this process's FANBANK_IDENTITY)."""
    signer = _Signer(settings, identity or settings.identity, deadline_seconds)
    inner = grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )
    return SignedChannel(inner, signer)


async def health_status(target: str, service: str = "", timeout_seconds: float = 1.0) -> str:
    """The standard gRPC health answer of `target` ("SERVING", "NOT_SERVING", …), or the status code
    name when it cannot answer ("UNAVAILABLE", "DEADLINE_EXCEEDED"). Needs no signature."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds)
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
