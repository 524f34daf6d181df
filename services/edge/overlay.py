"""The creator's OBS overlay: `GET /overlay/<token>` serves one self-contained page (overlay.html:
HTML, CSS and plain JS, nothing fetched from elsewhere but gift images), whose EventSource reads
`GET /overlay/<token>/events`, the creator's WatchCreatorAlerts as SSE.

The token is the credential (Gifts' RotateOverlayToken makes it; only its hash is stored there).
The edge calls Gifts as itself with the token: ResolveOverlayToken before serving the page (an
unknown or rotated token → 404) and WatchCreatorAlerts(overlay_token=…) for the feed, which Gifts
ends with PERMISSION_DENIED the moment a rotated token would receive its next event. The token is
never logged (the access log names the route's template) and never leaves in a Referer (the page
and its images are no-referrer); the page is not cached anywhere (no-store).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from services.edge import handlers, transcode
from services.edge.errors import EdgeError
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2 as gpb

if TYPE_CHECKING:
    from services.edge.app import Gateway

GIFTS = gpb.DESCRIPTOR.services_by_name["GiftsService"]
RESOLVE = GIFTS.methods_by_name["ResolveOverlayToken"]
WATCH = GIFTS.methods_by_name["WatchCreatorAlerts"]
PAGE_PATH = "/overlay/{token}"
EVENTS_PATH = "/overlay/{token}/events"
# Gifts' tokens are "ovl_" + unpadded base64url of an HMAC-SHA256; anything else is not one, and is
# refused here without a call.
_TOKEN = re.compile(r"ovl_[A-Za-z0-9_-]{16,128}")
_PAGE = (Path(__file__).with_name("overlay.html")).read_text(encoding="utf-8")
# The page's own inline style and script run (by nonce), and nothing else: no other script, no
# frames, no forms; images only from web addresses (gift images); connections only back here.
_POLICY = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src https: http: data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def _not_found() -> EdgeError:
    return EdgeError(grpc.StatusCode.NOT_FOUND, "OVERLAY_NOT_FOUND", "no overlay has this address")


def _token(request: Request) -> str:
    token = request.path_params["token"]
    if not _TOKEN.fullmatch(token):
        raise _not_found()
    return token


def _render(message) -> dict:
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def routes(gateway: Gateway, gifts_target: str) -> list[Route]:
    async def page(request: Request) -> Response:
        await gateway.admit(request.scope, None)
        token = _token(request)
        try:
            await gateway.call_as_edge(RESOLVE, gifts_target, gpb.ResolveOverlayTokenRequest(overlay_token=token))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise _not_found() from None
            raise
        nonce = secrets.token_urlsafe(16)
        headers = {**_PAGE_HEADERS, "Content-Security-Policy": _POLICY.format(nonce=nonce)}
        return HTMLResponse(_PAGE.replace("__NONCE__", nonce), headers=headers)

    async def events(request: Request) -> Response:
        await gateway.admit(request.scope, None)
        watch = gpb.WatchCreatorAlertsRequest(overlay_token=_token(request))
        # EventSource reconnects with the id of the last event it saw: the resume token.
        transcode.resume_token_from(watch, request.headers.get("last-event-id"))
        stream = await gateway.open_call(
            rpc,
            gateway.method(WATCH, gifts_target),
            watch,
            None,
            _render,
            GIFTS.full_name,
            {"cache-control": "no-store", "referrer-policy": "no-referrer"},
            resumable=True,
        )
        return stream

    rpc = f"/{GIFTS.full_name}/WatchCreatorAlerts"
    return [
        Route(PAGE_PATH, handlers.guarded(PAGE_PATH, GIFTS.full_name, f"/{GIFTS.full_name}/ResolveOverlayToken", page)),
        Route(EVENTS_PATH, handlers.guarded(EVENTS_PATH, GIFTS.full_name, rpc, events)),
    ]
