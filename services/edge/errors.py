"""Errors on HTTP: the JSON `google.rpc.Status` (with its ErrorInfo) and the HTTP status that
google/rpc/code.proto assigns to its code.

Backend errors pass through as the service wrote them. The edge's own refusals use the same shape
and the reasons in EDGE_REASONS, so a client handles both alike and a test can tell them apart.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from starlette.responses import JSONResponse

from shared.errors import DomainError

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# Every reason the edge itself answers with.
EDGE_REASONS = frozenset(
    {
        "ROUTE_NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "TOKEN_MISSING",
        "TOKEN_INVALID",
        "TOKEN_EXPIRED",
        "TOKEN_NOT_YET_VALID",
        "TOKEN_WRONG_AUDIENCE",
        "TOKEN_WRONG_ISSUER",
        "INVALID_JSON",
        "UNKNOWN_FIELD",
        "INVALID_FIELD_VALUE",
        "PATH_BODY_MISMATCH",
        "UNSUPPORTED_MEDIA_TYPE",
        "BODY_TOO_LARGE",
        "TOO_MANY_STREAMS",
        "RATE_LIMITED",
        "OVERLAY_NOT_FOUND",
        "BACKEND_UNAVAILABLE",
        "BACKEND_TIMEOUT",
        "INTERNAL",
    }
)
_WWW_AUTHENTICATE = 'Bearer realm="fanbank"'


class EdgeError(Exception):
    """A refusal by the edge itself; `http_status` overrides the code's mapping where HTTP has a
    more precise answer (413, 415, 405)."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        http_status: int | None = None,
        headers: dict[str, str] | None = None,
        retry_delay_ms: int | None = None,
        **metadata: str,
    ):
        assert reason in EDGE_REASONS, reason
        super().__init__(message)
        self.error = DomainError(code, reason, message, metadata, retry_delay_ms)
        self.http_status = http_status or HTTP_STATUS[code]
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return status_response(self.error.to_status(), self.http_status, self.headers)


def unauthenticated(reason: str, message: str, error: str | None = "invalid_token") -> EdgeError:
    """401 with the RFC 6750 challenge; `error` is omitted when no token was sent at all."""
    challenge = _WWW_AUTHENTICATE
    if error:
        challenge += f', error="{error}", error_description="{message}"'
    return EdgeError(grpc.StatusCode.UNAUTHENTICATED, reason, message, headers={"WWW-Authenticate": challenge})


def status_response(status: status_pb2.Status, http_status: int | None = None, headers=None) -> JSONResponse:
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    http_status = http_status or HTTP_STATUS[code]
    headers = dict(headers or {})
    if http_status == 401:
        headers.setdefault("WWW-Authenticate", _WWW_AUTHENTICATE)
    delay = retry_delay_seconds(status)
    if delay is not None and http_status in (429, 503):
        headers.setdefault("Retry-After", str(delay))
    return JSONResponse(json_format.MessageToDict(status), http_status, headers)


def retry_delay_seconds(status: status_pb2.Status) -> int | None:
    """The RetryInfo delay, rounded up to whole seconds as Retry-After counts them."""
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return max(1, math.ceil(retry.retry_delay.ToMilliseconds() / 1000))
    return None


def from_rpc_error(error: grpc.aio.AioRpcError, service: str) -> status_pb2.Status:
    """The backend's own status when it sent one; otherwise the transport failed (no server, no
    answer in time) and the edge says so plainly."""
    try:
        status = rpc_status.from_call(error)
    except ValueError:
        status = None
    if status is not None:
        return status
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return EdgeError(
            code, "BACKEND_UNAVAILABLE", f"{service} is not reachable right now; try again shortly", service=service
        ).error.to_status()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return EdgeError(
            code, "BACKEND_TIMEOUT", f"{service} did not answer in time", service=service
        ).error.to_status()
    return status_pb2.Status(code=code.value[0], message=error.details() or code.name)


def internal() -> EdgeError:
    return EdgeError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error")
