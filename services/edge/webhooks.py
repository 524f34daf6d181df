"""Provider webhooks: a fixed route per provider that hands the raw body and the signature header
to the service that owns the provider's events (DESIGN.md "Edge"). The edge verifies nothing and
stores nothing; the service checks the signature with its secret and deduplicates the event.

`POST /webhooks/livekit` → Billing's ReceiveMediaWebhook, called as the edge itself (no user):
a forged or altered webhook is Billing's UNAUTHENTICATED, so 401; a verified one answers 200 with
Billing's JSON response. The body is bounded by FANBANK_EDGE_MAX_BODY_BYTES like every other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.edge import handlers
from shared.gen.fanbank.billing.v1 import billing_service_pb2 as bpb

if TYPE_CHECKING:
    from services.edge.app import Gateway

BILLING = bpb.DESCRIPTOR.services_by_name["BillingService"]
RECEIVE_MEDIA_WEBHOOK = BILLING.methods_by_name["ReceiveMediaWebhook"]
LIVEKIT_PATH = "/webhooks/livekit"
MAX_AUTHORIZATION_CHARS = 8192


def routes(gateway: Gateway, billing_target: str) -> list[Route]:
    async def livekit(request: Request) -> Response:
        await gateway.admit(request.scope, None)
        body = await handlers.raw_body(request, gateway.settings.edge_max_body_bytes)
        authorization = request.headers.get("authorization", "")[:MAX_AUTHORIZATION_CHARS]
        reply = await gateway.call_as_edge(
            RECEIVE_MEDIA_WEBHOOK,
            billing_target,
            bpb.ReceiveMediaWebhookRequest(body=body, authorization=authorization),
        )
        return JSONResponse(json_format.MessageToDict(reply, always_print_fields_with_no_presence=True))

    endpoint = handlers.guarded(LIVEKIT_PATH, BILLING.full_name, f"/{BILLING.full_name}/ReceiveMediaWebhook", livekit)
    return [Route(LIVEKIT_PATH, endpoint, methods=["POST"])]
