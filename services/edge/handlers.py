"""What every edge route shares, generated or fixed: the request id, the bounded body, turning
failures into `google.rpc.Status` responses, and the access log line (which names the route's
template, never the path: an overlay path holds a secret)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
from starlette.requests import Request
from starlette.responses import Response

from services.edge.errors import EdgeError, from_rpc_error, internal, status_response
from shared import logs

log = logging.getLogger("services.edge.app")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_JSON_TYPE = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json")


def request_id(request: Request) -> str:
    rid = request.headers.get("x-request-id", "")
    if not _REQUEST_ID.fullmatch(rid):
        rid = uuid.uuid4().hex
    logs.request_id.set(rid)
    return rid


async def raw_body(request: Request, limit: int) -> bytes:
    """The body as sent, refused with 413 past `limit` bytes (declared or streamed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, limit: int) -> bytes:
    body = await raw_body(request, limit)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and not _JSON_TYPE.fullmatch(media_type):
        raise EdgeError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as application/json",
            http_status=415,
        )
    return body


def too_large(limit: int) -> EdgeError:
    return EdgeError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "BODY_TOO_LARGE",
        f"the request body exceeds {limit} bytes",
        http_status=413,
        limit=str(limit),
    )


def access_log(method: str, route: str, rpc: str | None, status: int, started: float, user: str | None) -> None:
    level = logging.DEBUG if status < 400 else logging.ERROR if status >= 500 and status != 503 else logging.INFO
    if log.isEnabledFor(level):
        log.log(
            level,
            "http",
            extra={
                "method": method,
                "route": route,
                "rpc": rpc,
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 3),
                "user": user,
            },
        )


def guarded(route: str, service: str, rpc: str | None, handler: Callable[[Request], Awaitable[Response]]):
    """A Starlette endpoint around `handler` with the request id, Status errors and the access log."""

    async def endpoint(request: Request) -> Response:
        rid = request_id(request)
        started = time.perf_counter()
        try:
            response = await handler(request)
        except EdgeError as error:
            response = error.response()
        except grpc.aio.AioRpcError as error:
            response = status_response(from_rpc_error(error, service))
        except Exception:
            log.exception("edge request failed", extra={"route": route})
            response = internal().response()
        response.headers.setdefault("x-request-id", rid)
        access_log(request.method, route, rpc, getattr(response, "status_code", 200), started, None)
        return response

    return endpoint
