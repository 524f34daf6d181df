"""Domain errors and their wire form: a canonical gRPC code plus a `google.rpc.Status` carrying an
`ErrorInfo{reason, domain, metadata}` (AIP-193).

Services raise `DomainError`; the runtime (shared/server.py) turns it into the status. Nothing else maps
errors, so every service answers alike.
"""

from __future__ import annotations

import re

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "fanbank.dev"
_REASON = re.compile(r"[A-Z][A-Z0-9_]*")


class DomainError(Exception):
    """An expected refusal: the request is wrong or the state does not allow it."""

    def __init__(
        self,
        code: grpc.StatusCode,
        reason: str,
        message: str,
        metadata: dict[str, str] | None = None,
        retry_delay_ms: int | None = None,
    ):
        super().__init__(message)
        assert _REASON.fullmatch(reason), reason
        self.code = code
        self.reason = reason
        self.message = message
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        self.retry_delay_ms = retry_delay_ms

    def to_status(self) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        detail = any_pb2.Any()
        detail.Pack(info, deterministic=True)
        details = [detail]
        if self.retry_delay_ms is not None:
            retry = error_details_pb2.RetryInfo()
            retry.retry_delay.FromMilliseconds(self.retry_delay_ms)
            packed = any_pb2.Any()
            packed.Pack(retry, deterministic=True)
            details.append(packed)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    @classmethod
    def from_status(cls, status: status_pb2.Status) -> DomainError:
        code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
        info = error_info(status)
        reason = info.reason if info else "UNKNOWN"
        metadata = dict(info.metadata) if info else {}
        return cls(code, reason, status.message, metadata)

    def __repr__(self) -> str:
        return f"DomainError({self.code.name}, {self.reason}, {self.message!r})"


_CODE_BY_NUMBER = {c.value[0]: c for c in grpc.StatusCode}
assert code_pb2.FAILED_PRECONDITION == grpc.StatusCode.FAILED_PRECONDITION.value[0]


def error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def reason_of(error: grpc.aio.AioRpcError) -> str:
    """The ErrorInfo reason of a failed call ('' when it carries none)."""
    status = rpc_status.from_call(error)
    info = error_info(status) if status else None
    return info.reason if info else ""


def invalid(reason: str, message: str, **metadata: str) -> DomainError:
    return DomainError(grpc.StatusCode.INVALID_ARGUMENT, reason, message, metadata)


def not_found(reason: str, message: str, **metadata: str) -> DomainError:
    return DomainError(grpc.StatusCode.NOT_FOUND, reason, message, metadata)


def precondition(reason: str, message: str, **metadata: str) -> DomainError:
    return DomainError(grpc.StatusCode.FAILED_PRECONDITION, reason, message, metadata)


def denied(reason: str, message: str, **metadata: str) -> DomainError:
    return DomainError(grpc.StatusCode.PERMISSION_DENIED, reason, message, metadata)


def already_exists(reason: str, message: str, **metadata: str) -> DomainError:
    return DomainError(grpc.StatusCode.ALREADY_EXISTS, reason, message, metadata)


def unauthenticated(reason: str, message: str) -> DomainError:
    return DomainError(grpc.StatusCode.UNAUTHENTICATED, reason, message)
