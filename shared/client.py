"""Outgoing gRPC channels: every call is signed with this process's identity (and the user it acts
for, when the edge sets one), carries a deadline, and is retried on UNAVAILABLE by gRPC's own retry
policy. Every Fanbank RPC is either a read or carries a request id, so a retry cannot apply twice.
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
        ]
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

    def details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        method = details.method.decode() if isinstance(details.method, bytes) else details.method
        acting = auth.acting_user.get()
        user, roles = acting if acting else (None, ())
        metadata = list(details.metadata or [])
        metadata += self._signature(method, user, tuple(roles))
        rid = logs.request_id.get()
        if rid and not any(k == "x-request-id" for k, _ in metadata):
            metadata.append(("x-request-id", rid))
        timeout = details.timeout if details.timeout is not None else self.deadline
        return grpc.aio.ClientCallDetails(
            details.method, timeout, metadata, details.credentials, details.wait_for_ready
        )


class _UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, signer: _Signer):
        self.signer = signer

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(self.signer.details(client_call_details), request)


class _UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, signer: _Signer):
        self.signer = signer

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(self.signer.details(client_call_details), request)


def channel(
    settings: Settings,
    target: str,
    identity: str | None = None,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
) -> grpc.aio.Channel:
    """A channel whose calls are signed as `identity` (default: this process's FANBANK_IDENTITY)."""
    signer = _Signer(settings, identity or settings.identity, deadline_seconds)
    return grpc.aio.insecure_channel(
        target,
        options=[
            ("grpc.enable_retries", 1),
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.keepalive_time_ms", 30_000),
        ],
        interceptors=[_UnaryUnary(signer), _UnaryStream(signer)],
    )


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
