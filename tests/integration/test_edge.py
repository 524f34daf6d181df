"""The REST edge against a real Wallet (and a test-only service for the rest of google.api.http),
over real HTTP: a uvicorn server in this process on a pre-bound port.

Routes come only from the descriptors, so the pinned route set is what keeps an internal RPC off
HTTP, and the sample table (one working call per route) is what keeps a new route from going
untested.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path

import grpc_tools
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from grpc_tools import protoc
from openapi_spec_validator import validate as validate_openapi

from services.edge import rules
from services.edge.app import build_app
from services.edge.server import listening_socket, make_server
from services.edge.token import mint
from shared import auth
from shared.config import REPO
from shared.errors import denied, not_found, precondition
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from shared.server import Registration, start_server
from tests.harness import Caller, migrated_engine, running, settings_for

ORIGIN = "https://app.example"
WALLET_ROUTES = {
    ("GET", "/v1/owners/{owner_id}/balance"),
    ("GET", "/v1/owners/{owner_id}/entries"),
    ("GET", "/v1/owners/{owner_id}/balance:watch"),
    ("GET", "/v1/admin/audit"),
    ("POST", "/v1/admin/adjustments"),
    ("POST", "/v1/admin/promotions"),
}
# Every HTTP route, by service: an RPC appears on HTTP only when its annotation is pinned here too.
BILLING_ROUTES = {
    ("PUT", "/v1/creators/{creator_id}/call-settings"),
    ("GET", "/v1/creators/{creator_id}/call-settings"),
    ("POST", "/v1/calls"),
    ("POST", "/v1/calls/{call_id}:pause"),
    ("POST", "/v1/calls/{call_id}:resume"),
    ("POST", "/v1/calls/{call_id}:end"),
    ("GET", "/v1/calls/{call_id}"),
    ("GET", "/v1/calls"),
    ("GET", "/v1/creators/{creator_id}/call-stats"),
    ("GET", "/v1/calls/{call_id}:watch"),
}
GIFTS_ROUTES = {
    ("POST", "/v1/gifts"),
    ("PUT", "/v1/gifts/{gift_id}"),
    ("POST", "/v1/gifts/{gift_id}:deactivate"),
    ("GET", "/v1/gifts"),
    ("POST", "/v1/tips"),
    ("POST", "/v1/gifts/{gift_id}:send"),
    ("POST", "/v1/like-tips"),
    ("GET", "/v1/tips"),
    ("GET", "/v1/creators/{creator_id}/tip-stats"),
    ("GET", "/v1/creators/{creator_id}/leaderboard"),
    ("PUT", "/v1/creators/{creator_id}/streams/{stream_id}/goal"),
    ("GET", "/v1/creators/{creator_id}/streams/{stream_id}/goal"),
    ("POST", "/v1/tips/{tip_id}:hideMessage"),
    ("GET", "/v1/creators/{creator_id}/alerts:watch"),
    ("POST", "/v1/creators/{creator_id}/overlay-token:rotate"),
}
STREAMS_ROUTES = {
    ("POST", "/v1/streams"),
    ("GET", "/v1/streams/{stream_id}"),
    ("GET", "/v1/creators/{creator_id}/streams"),
    ("POST", "/v1/streams/{stream_id}:start"),
    ("POST", "/v1/streams/{stream_id}:end"),
    ("POST", "/v1/streams/{stream_id}:cancel"),
    ("POST", "/v1/streams/{stream_id}/invites:update"),
    ("GET", "/v1/streams/{stream_id}/invites"),
    ("POST", "/v1/streams/{stream_id}/tickets"),
    ("GET", "/v1/streams/{stream_id}/access"),
    ("POST", "/v1/streams/{stream_id}:join"),
    ("POST", "/v1/streams/{stream_id}:leave"),
    ("GET", "/v1/streams/{stream_id}:watch"),
}
PINNED_ROUTES = {
    "fanbank.wallet.v1.WalletService": WALLET_ROUTES,
    "fanbank.billing.v1.BillingService": BILLING_ROUTES,
    "fanbank.gifts.v1.GiftsService": GIFTS_ROUTES,
    "fanbank.streams.v1.StreamsService": STREAMS_ROUTES,
}
THING_ROUTES = {
    ("GET", "/v1/{name=owners/*/things/*}"),
    ("GET", "/v1/things/{name}"),
    ("POST", "/v1/{parent=owners/*}/things"),
    ("PUT", "/v1/{parent=owners/*}/things:create"),
    ("PATCH", "/v1/{thing.name=owners/*/things/*}"),
    ("POST", "/v1/{name=owners/*/things/*}:cancel"),
    ("GET", "/v1/{parent=owners/*}/things:watch"),
}


def fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error_of(response: httpx.Response) -> tuple[int, str]:
    """(google.rpc code, ErrorInfo reason) of an error body; fails on anything else (a traceback)."""
    body = response.json()
    infos = [d for d in body.get("details", []) if d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo"]
    assert set(body) <= {"code", "message", "details"} and infos, body
    return body["code"], infos[0]["reason"]


@asynccontextmanager
async def serving(settings, app):
    """uvicorn on a pre-bound socket: the port is known before start-up and early requests wait."""
    sock = listening_socket("127.0.0.1")
    server = make_server(settings, app, port=0, handle_signals=False)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            yield http, server
    finally:
        server.should_exit = True
        await task


class Edge:
    def __init__(self, settings, http: httpx.AsyncClient, app, wallet_service, caller: Caller):
        self.settings = settings
        self.http = http
        self.app = app
        self.wallet_service = wallet_service
        self.caller = caller

    def auth(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(self.settings, user, roles)}"}

    async def grant(self, owner: str, amount: int) -> None:
        await self.caller.wallet.GrantPromotion(
            pb.GrantPromotionRequest(request_id=fresh("g"), owner_id=owner, amount=amount)
        )


@pytest.fixture(scope="module")
async def wallet(database_url, redis_url):
    settings = settings_for(database_url, redis_url, shutdown_grace_seconds=1, cors_origins=(ORIGIN,))
    engine = await migrated_engine(settings)
    async with running("wallet", settings, engine) as (target, service):
        settings = dataclasses.replace(settings, addresses={**settings.addresses, "wallet": target})
        yield settings, service, engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def edge(wallet):
    """The edge for the Wallet's protos only: these tests are about its behaviour, whatever other
    services' stubs exist."""
    settings, service, _ = wallet
    app = build_app(settings, [pb.DESCRIPTOR], keepalive_seconds=0.2)
    caller = Caller(settings, settings.addresses["wallet"])
    async with serving(settings, app) as (http, _server):
        yield Edge(settings, http, app, service, caller)
    await caller.close()


@asynccontextmanager
async def other_edge(settings, **kwargs):
    """A Wallet-only edge with other settings (or backends)."""
    app = build_app(settings, [pb.DESCRIPTOR], **kwargs)
    async with serving(settings, app) as (http, server):
        yield http, server


# ---- routes ------------------------------------------------------------------------------------


def test_routes_are_exactly_the_pinned_user_facing_rpcs():
    bound = rules.bindings(rules.discover_files())
    by_service: dict[str, set] = {}
    for binding in bound:
        by_service.setdefault(binding.service_name, set()).add(binding.key)
    unpinned = sorted(set(by_service) - set(PINNED_ROUTES))
    assert not unpinned, f"pin the HTTP routes of {unpinned} in PINNED_ROUTES (and add a sample call to SAMPLES)"
    assert by_service == PINNED_ROUTES
    # Discovery missed no proto: the protos' own text has as many annotated RPCs.
    annotated = sum(
        f.read_text().count("option (google.api.http)") for f in (REPO / "protos" / "fanbank").rglob("*.proto")
    )
    assert len({b.method.full_name for b in bound}) == annotated


def test_wallet_internal_rpcs_are_not_on_http():
    wallet_routes = {b.method.name for b in rules.bindings([pb.DESCRIPTOR])}
    assert wallet_routes == {"GetBalance", "ListEntries", "WatchBalance", "Audit", "AdjustBalance", "GrantPromotion"}
    internal = set(pb.DESCRIPTOR.services_by_name["WalletService"].methods_by_name) - wallet_routes
    assert {"Transfer", "BatchTransfer", "ReverseTransfer", "CreateHold", "CaptureHold", "VoidHold"} <= internal


# One call per route that must succeed: (user, roles, url, JSON body). A route without one fails
# the test below, so a newly annotated RPC cannot go uncalled.
SAMPLE_OWNER = "fan-sample"
SAMPLE_CREATOR = "creator-sample"
SAMPLES = {
    ("GET", "/v1/owners/{owner_id}/balance"): (
        SAMPLE_OWNER,
        (),
        f"/v1/owners/{SAMPLE_OWNER}/balance?asset=ASSET_TOKEN",
        None,
    ),
    ("GET", "/v1/owners/{owner_id}/entries"): (
        SAMPLE_OWNER,
        (),
        f"/v1/owners/{SAMPLE_OWNER}/entries?page_size=5",
        None,
    ),
    ("GET", "/v1/owners/{owner_id}/balance:watch"): (
        SAMPLE_OWNER,
        (),
        f"/v1/owners/{SAMPLE_OWNER}/balance:watch",
        None,
    ),
    ("GET", "/v1/admin/audit"): ("ops-1", ("admin",), "/v1/admin/audit", None),
    ("POST", "/v1/admin/adjustments"): (
        "ops-1",
        ("admin",),
        "/v1/admin/adjustments",
        {
            "requestId": "sample-adjustment",
            "account": {"ownerId": SAMPLE_OWNER, "code": "ACCOUNT_CODE_USER_PURCHASED", "asset": "ASSET_TOKEN"},
            "amount": "5",
            "reason": "goodwill",
        },
    ),
    ("POST", "/v1/admin/promotions"): (
        "ops-1",
        ("admin",),
        "/v1/admin/promotions",
        {"request_id": "sample-promotion", "owner_id": SAMPLE_OWNER, "amount": 3, "campaign_id": "spring"},
    ),
    ("PUT", "/v1/creators/{creator_id}/call-settings"): (
        SAMPLE_CREATOR,
        ("creator",),
        f"/v1/creators/{SAMPLE_CREATOR}/call-settings",
        {"rateTokensPerMinute": "100", "available": True},
    ),
    ("GET", "/v1/creators/{creator_id}/call-settings"): (
        SAMPLE_CREATOR,
        ("creator",),
        f"/v1/creators/{SAMPLE_CREATOR}/call-settings",
        None,
    ),
    ("GET", "/v1/calls"): (SAMPLE_OWNER, (), f"/v1/calls?fanId={SAMPLE_OWNER}", None),
    ("GET", "/v1/creators/{creator_id}/call-stats"): (
        SAMPLE_CREATOR,
        ("creator",),
        f"/v1/creators/{SAMPLE_CREATOR}/call-stats",
        None,
    ),
    ("POST", "/v1/gifts"): (
        "ops-1",
        ("admin",),
        "/v1/gifts",
        {
            "requestId": "sample-gift",
            "gift": {"name": "Rose", "priceTokens": "100", "category": "emoji", "rarity": "common"},
        },
    ),
    ("GET", "/v1/gifts"): (SAMPLE_OWNER, (), "/v1/gifts?pageSize=10", None),
    ("GET", "/v1/tips"): (SAMPLE_OWNER, (), f"/v1/tips?senderId={SAMPLE_OWNER}", None),
    ("GET", "/v1/creators/{creator_id}/tip-stats"): (
        SAMPLE_CREATOR,
        ("creator",),
        f"/v1/creators/{SAMPLE_CREATOR}/tip-stats?period=PERIOD_ISO_WEEK",
        None,
    ),
    ("GET", "/v1/creators/{creator_id}/leaderboard"): (
        SAMPLE_OWNER,
        (),
        f"/v1/creators/{SAMPLE_CREATOR}/leaderboard?period=PERIOD_ALL_TIME&limit=5",
        None,
    ),
    ("PUT", "/v1/creators/{creator_id}/streams/{stream_id}/goal"): (
        SAMPLE_CREATOR,
        ("creator",),
        f"/v1/creators/{SAMPLE_CREATOR}/streams/stream-sample/goal",
        {"requestId": "sample-goal", "title": "New mic", "targetTokens": "500"},
    ),
    ("GET", "/v1/creators/{creator_id}/streams/{stream_id}/goal"): (
        SAMPLE_OWNER,
        (),
        f"/v1/creators/{SAMPLE_CREATOR}/streams/stream-sample/goal",
        None,
    ),
    ("POST", "/v1/creators/{creator_id}/overlay-token:rotate"): (
        SAMPLE_CREATOR,
        ("creator",),
        f"/v1/creators/{SAMPLE_CREATOR}/overlay-token:rotate",
        {"requestId": "sample-rotation"},
    ),
    ("POST", "/v1/streams"): (
        SAMPLE_CREATOR,
        ("creator",),
        "/v1/streams",
        {"requestId": "sample-stream", "creatorId": SAMPLE_CREATOR, "title": "Hello", "kind": "STREAM_KIND_PUBLIC"},
    ),
    ("GET", "/v1/creators/{creator_id}/streams"): (
        SAMPLE_OWNER,
        (),
        f"/v1/creators/{SAMPLE_CREATOR}/streams?status=STREAM_STATUS_SCHEDULED&pageSize=5",
        None,
    ),
}
# Routes whose sample reaches the backend and gets its typed refusal: proof of method, path and
# transcoding without setting up a funded call (the Billing tests cover the flows themselves).
REFUSED_SAMPLES = {
    ("POST", "/v1/calls"): (
        SAMPLE_OWNER,
        (),
        "/v1/calls",
        {
            "requestId": "sample-call",
            "fanId": SAMPLE_OWNER,
            "creatorId": "nobody-takes-calls",
            "rateTokensPerMinute": "100",
        },
        (404, "CALL_SETTINGS_NOT_FOUND"),
    ),
    **{
        ("POST", f"/v1/calls/{{call_id}}:{verb}"): (
            SAMPLE_OWNER,
            (),
            f"/v1/calls/no-such-call:{verb}",
            {"requestId": f"sample-{verb}"},
            (404, "CALL_NOT_FOUND"),
        )  # fmt: skip
        for verb in ("pause", "resume", "end")
    },
    ("GET", "/v1/calls/{call_id}"): (SAMPLE_OWNER, (), "/v1/calls/no-such-call", None, (404, "CALL_NOT_FOUND")),
    ("GET", "/v1/calls/{call_id}:watch"): (
        SAMPLE_OWNER,
        (),
        "/v1/calls/no-such-call:watch",
        None,
        (404, "CALL_NOT_FOUND"),
    ),  # fmt: skip
    # Gifts: the money RPCs are refused before any charge (the Gifts tests cover the flows), so the
    # sample owner's balance stays what the Wallet samples made it.
    ("PUT", "/v1/gifts/{gift_id}"): (
        "ops-1",
        ("admin",),
        "/v1/gifts/no-such-gift",
        {
            "requestId": "sample-update",
            "gift": {"name": "Rose", "priceTokens": "5", "category": "emoji", "rarity": "common"},
        },
        (404, "GIFT_NOT_FOUND"),
    ),
    ("POST", "/v1/gifts/{gift_id}:deactivate"): (
        "ops-1",
        ("admin",),
        "/v1/gifts/no-such-gift:deactivate",
        {"requestId": "sample-deactivate"},
        (404, "GIFT_NOT_FOUND"),
    ),
    ("POST", "/v1/tips"): (
        SAMPLE_OWNER,
        (),
        "/v1/tips",
        {
            "requestId": "sample-tip",
            "senderId": SAMPLE_OWNER,
            "creatorId": SAMPLE_OWNER,
            "amountTokens": "5",
            "contextType": "CONTEXT_TYPE_PROFILE",
            "contextId": SAMPLE_OWNER,
        },
        (400, "SELF_TIP"),
    ),
    ("POST", "/v1/gifts/{gift_id}:send"): (
        SAMPLE_OWNER,
        (),
        "/v1/gifts/no-such-gift:send",
        {
            "requestId": "sample-send",
            "senderId": SAMPLE_OWNER,
            "creatorId": SAMPLE_CREATOR,
            "quantity": "1",
            "priceTokens": "5",
            "contextType": "CONTEXT_TYPE_STREAM",
            "contextId": "stream-sample",
        },
        (404, "GIFT_NOT_FOUND"),
    ),
    ("POST", "/v1/like-tips"): (
        SAMPLE_OWNER,
        (),
        "/v1/like-tips",
        {
            "requestId": "sample-like",
            "senderId": SAMPLE_OWNER,
            "creatorId": SAMPLE_CREATOR,
            "contextType": "CONTEXT_TYPE_POST",
            "contextId": "post-sample",
        },
        (400, "LIKE_TIPS_DISABLED"),  # the default preset (digis) has no paid likes
    ),
    ("POST", "/v1/tips/{tip_id}:hideMessage"): (
        "ops-1",
        ("admin",),
        "/v1/tips/no-such-tip:hideMessage",
        {"requestId": "sample-hide"},
        (404, "TIP_NOT_FOUND"),
    ),
    ("GET", "/v1/creators/{creator_id}/alerts:watch"): (
        SAMPLE_OWNER,
        (),
        f"/v1/creators/{SAMPLE_CREATOR}/alerts:watch",
        None,
        (403, "NOT_YOURS"),
    ),
    # Streams: ids are the server's, so the samples name an unknown stream (test_streams.py covers
    # the flows); the creator's own calls are refused as unknown, a fan's purchase likewise.
    **{
        ("POST", f"/v1/streams/{{stream_id}}:{verb}"): (
            SAMPLE_CREATOR,
            ("creator",),
            f"/v1/streams/no-such-stream:{verb}",
            {"requestId": f"sample-{verb}"},
            (404, "STREAM_NOT_FOUND"),
        )  # fmt: skip
        for verb in ("start", "end", "cancel")
    },
    **{
        ("POST", f"/v1/streams/{{stream_id}}:{verb}"): (
            SAMPLE_OWNER,
            (),
            f"/v1/streams/no-such-stream:{verb}",
            {"requestId": f"sample-{verb}", "userId": SAMPLE_OWNER},
            (404, "STREAM_NOT_FOUND"),
        )  # fmt: skip
        for verb in ("join", "leave")
    },
    **{
        ("GET", f"/v1/streams/{{stream_id}}{suffix}"): (
            SAMPLE_OWNER,
            (),
            f"/v1/streams/no-such-stream{suffix}{query}",
            None,
            (404, "STREAM_NOT_FOUND"),
        )  # fmt: skip
        for suffix, query in (("", ""), ("/invites", ""), ("/access", f"?userId={SAMPLE_OWNER}"), (":watch", ""))
    },
    ("POST", "/v1/streams/{stream_id}/invites:update"): (
        SAMPLE_CREATOR,
        ("creator",),
        "/v1/streams/no-such-stream/invites:update",
        {"requestId": "sample-invites", "addUserIds": [SAMPLE_OWNER]},
        (404, "STREAM_NOT_FOUND"),
    ),
    ("POST", "/v1/streams/{stream_id}/tickets"): (
        SAMPLE_OWNER,
        (),
        "/v1/streams/no-such-stream/tickets",
        {"requestId": "sample-ticket", "fanId": SAMPLE_OWNER, "priceTokens": "500"},
        (404, "STREAM_NOT_FOUND"),
    ),
}


async def test_every_annotated_rpc_answers_over_http(wallet):
    """Through an edge built by discovery (as in production), every backend it routes to running."""
    settings, _, engine = wallet
    bound = rules.bindings(rules.discover_files())
    unsampled = [b.key for b in bound if b.key not in SAMPLES and b.key not in REFUSED_SAMPLES]
    assert not unsampled, f"add a sample call to SAMPLES for {unsampled}"
    async with contextlib.AsyncExitStack() as stack:
        addresses = dict(settings.addresses)
        for name in sorted({rules.backend_of(b.service_name) for b in bound} - {"wallet"}):
            addresses[name], _ = await stack.enter_async_context(running(name, settings, engine))
        full = dataclasses.replace(settings, addresses=addresses)
        http, _ = await stack.enter_async_context(serving(full, build_app(full)))
        # Writes first, so reads (a creator's call settings) find what the samples set up.
        for binding in sorted(bound, key=lambda b: b.http_method == "GET"):
            if binding.key in REFUSED_SAMPLES:
                user, roles, url, body, (status, reason) = REFUSED_SAMPLES[binding.key]
                headers = {"Authorization": f"Bearer {mint(full, user, roles)}"}
                response = await http.request(binding.http_method, url, headers=headers, json=body)
                assert (response.status_code, error_of(response)[1]) == (status, reason), (binding.key, response.text)
                continue
            user, roles, url, body = SAMPLES[binding.key]
            headers = {"Authorization": f"Bearer {mint(full, user, roles)}"}
            if binding.streaming:
                async with http.stream(binding.http_method, url, headers=headers) as response:
                    assert response.status_code == 200, await response.aread()
                    first = await next_data(sse_events(response))
                assert json.loads(first["data"]), first
                continue
            response = await http.request(binding.http_method, url, headers=headers, json=body)
            assert response.status_code == 200, (binding.key, response.text)
        owner_headers = {"Authorization": f"Bearer {mint(full, SAMPLE_OWNER)}"}
        balance = (await http.get(f"/v1/owners/{SAMPLE_OWNER}/balance", headers=owner_headers)).json()
        assert balance["spendableAvailable"] == "8"


async def test_proto3_json_names_and_query_parameters(edge):
    owner = fresh("fan")
    await edge.grant(owner, 12)
    response = await edge.http.get(
        f"/v1/owners/{owner}/entries?pageSize=1&code=ACCOUNT_CODE_USER_PROMOTIONAL", headers=edge.auth(owner)
    )
    assert response.status_code == 200, response.text
    page = response.json()
    assert [e["amount"] for e in page["entries"]] == ["12"] and "nextPageToken" in page
    assert response.headers["x-request-id"]
    # An escaped '/' stays inside the single-segment owner id.
    slashed = (await edge.http.get("/v1/owners/team%2Fa/balance", headers=edge.auth("team/a"))).json()
    assert slashed["ownerId"] == "team/a"


# ---- errors ------------------------------------------------------------------------------------


async def test_backend_errors_map_to_http_with_error_info(edge):
    admin = edge.auth("ops-1", "admin")
    owner = fresh("fan")
    account = {"ownerId": owner, "code": "ACCOUNT_CODE_USER_PURCHASED", "asset": "ASSET_TOKEN"}

    def adjust(request_id, amount, reason="fix"):
        body = {"requestId": request_id, "account": account, "amount": amount, "reason": reason}
        return edge.http.post("/v1/admin/adjustments", headers=admin, json=body)

    missing = await adjust(fresh("adj"), -5)
    assert missing.status_code == 404 and error_of(missing) == (5, "ACCOUNT_NOT_FOUND")
    no_reason = await adjust(fresh("adj"), 5, reason="")
    assert no_reason.status_code == 400 and error_of(no_reason) == (3, "REASON_REQUIRED")
    request_id = fresh("adj")
    assert (await adjust(request_id, 5)).status_code == 200
    reused = await adjust(request_id, 6)
    assert reused.status_code == 409 and error_of(reused) == (6, "ID_REUSED_AMOUNT")
    short = await adjust(fresh("adj"), -50)
    assert short.status_code == 400 and error_of(short) == (9, "INSUFFICIENT_FUNDS")
    body = short.json()["details"][0]
    assert body["domain"] == "fanbank.dev" and body["metadata"]["needed"] == "50"


async def test_users_are_authorized_by_the_services(edge):
    owner, other = fresh("fan"), fresh("fan")
    mine = await edge.http.get(f"/v1/owners/{owner}/balance", headers=edge.auth(owner))
    assert mine.status_code == 200
    theirs = await edge.http.get(f"/v1/owners/{other}/balance", headers=edge.auth(owner))
    assert theirs.status_code == 403 and error_of(theirs) == (7, "NOT_YOUR_ACCOUNT")
    audit = await edge.http.get("/v1/admin/audit", headers=edge.auth(owner, "creator"))
    assert audit.status_code == 403 and error_of(audit)[1] == "ADMIN_ONLY"
    grant = await edge.http.post(
        "/v1/admin/promotions", headers=edge.auth(owner), json={"requestId": fresh("p"), "ownerId": owner, "amount": 1}
    )
    assert grant.status_code == 403 and error_of(grant)[1] == "ADMIN_ONLY"
    watch = await edge.http.get(f"/v1/owners/{other}/balance:watch", headers=edge.auth(owner))
    assert watch.status_code == 403 and error_of(watch)[1] == "NOT_YOUR_ACCOUNT"
    admin = await edge.http.get(f"/v1/owners/{other}/balance", headers=edge.auth("ops-1", "admin"))
    assert admin.status_code == 200


def _token(settings, **overrides) -> str:
    now = int(time.time())
    claims = {"sub": "fan-1", "aud": settings.jwt_audience, "iss": settings.jwt_issuer, "exp": now + 600, "nbf": now}
    key = overrides.pop("key", settings.jwt_secret)
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, key, algorithm="HS256")


async def test_bad_tokens_get_401_with_a_challenge(edge):
    url = "/v1/owners/fan-1/balance"
    s = edge.settings
    cases = {
        "TOKEN_MISSING": None,
        "TOKEN_EXPIRED": _token(s, exp=int(time.time()) - 3600),
        "TOKEN_NOT_YET_VALID": _token(s, nbf=int(time.time()) + 3600),
        "TOKEN_WRONG_AUDIENCE": _token(s, aud="someone-else"),
        "TOKEN_WRONG_ISSUER": _token(s, iss="https://evil.example"),
        "TOKEN_INVALID": _token(s, key="another-secret-that-is-long-enough-32b"),
    }
    for reason, token in cases.items():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = await edge.http.get(url, headers=headers)
        assert response.status_code == 401 and error_of(response) == (16, reason), response.text
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="fanbank"')
        assert ('error="invalid_token"' in challenge) == (token is not None)
    no_expiry, smuggled_user = _token(s, exp=None), _token(s, sub="a\nb")
    for header in ("Basic Zm9vOmJhcg==", "Bearer", f"Bearer {no_expiry}", f"Bearer {smuggled_user}"):
        response = await edge.http.get(url, headers={"Authorization": header})
        assert response.status_code == 401 and error_of(response)[1] in ("TOKEN_MISSING", "TOKEN_INVALID"), header
    roles = await edge.http.get(url, headers={"Authorization": f"Bearer {_token(s, roles=['admin,creator'])}"})
    assert roles.status_code == 401 and error_of(roles)[1] == "TOKEN_INVALID"


async def test_rs256_tokens_verify_with_the_configured_public_key(wallet, tmp_path):
    settings, _, _ = wallet
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "jwt.pem").write_bytes(pem)
    rs = dataclasses.replace(settings, jwt_algorithm="RS256", jwt_public_key=f"@{tmp_path / 'jwt.pem'}")
    now = int(time.time())
    claims = {"sub": "fan-rs", "aud": rs.jwt_audience, "iss": rs.jwt_issuer, "exp": now + 600, "roles": ["admin"]}
    good = jwt.encode(claims, private, algorithm="RS256")
    async with other_edge(rs) as (http, _):
        ok = await http.get("/v1/admin/audit", headers={"Authorization": f"Bearer {good}"})
        assert ok.status_code == 200 and ok.json()["ok"] is True
        # A token signed with the HS256 secret must not pass for RS256 (algorithm confusion).
        hs = await http.get("/v1/admin/audit", headers={"Authorization": f"Bearer {_token(settings, roles=['admin'])}"})
        assert hs.status_code == 401 and error_of(hs)[1] == "TOKEN_INVALID"


async def test_bodies_are_strict_proto3_json(edge):
    admin = edge.auth("ops-1", "admin")
    base = {"requestId": fresh("p"), "ownerId": "fan-json", "amount": "2"}
    cases = [
        ({**base, "amuont": 2}, "UNKNOWN_FIELD"),
        ({**base, "amount": "two"}, "INVALID_FIELD_VALUE"),
        ([base], "INVALID_JSON"),
    ]
    for body, reason in cases:
        response = await edge.http.post("/v1/admin/promotions", headers=admin, json=body)
        assert response.status_code == 400 and error_of(response) == (3, reason), response.text
    broken = await edge.http.post(
        "/v1/admin/promotions", headers={**admin, "Content-Type": "application/json"}, content=b'{"ownerId": '
    )
    assert broken.status_code == 400 and error_of(broken)[1] == "INVALID_JSON"
    form = await edge.http.post("/v1/admin/promotions", headers=admin, data={"ownerId": "x"})
    assert form.status_code == 415 and error_of(form)[1] == "UNSUPPORTED_MEDIA_TYPE"
    query = await edge.http.post("/v1/admin/promotions?amount=3", headers=admin, json=base)
    assert query.status_code == 400 and error_of(query)[1] == "UNKNOWN_FIELD"
    unknown_query = await edge.http.get("/v1/owners/fan-json/balance?colour=red", headers=edge.auth("fan-json"))
    assert unknown_query.status_code == 400 and error_of(unknown_query)[1] == "UNKNOWN_FIELD"
    bad_enum = await edge.http.get("/v1/owners/fan-json/balance?asset=GOLD", headers=edge.auth("fan-json"))
    assert bad_enum.status_code == 400 and error_of(bad_enum)[1] == "INVALID_FIELD_VALUE"


async def test_oversized_bodies_get_413(edge):
    admin = {**edge.auth("ops-1", "admin"), "Content-Type": "application/json"}
    limit = edge.settings.edge_max_body_bytes
    padding = json.dumps({"requestId": "x", "campaignId": "y" * limit}).encode()
    declared = await edge.http.post("/v1/admin/promotions", headers=admin, content=padding)
    assert declared.status_code == 413 and error_of(declared) == (8, "BODY_TOO_LARGE")

    async def chunks():
        for _ in range(limit // 1024 + 2):
            yield b" " * 1024

    streamed = await edge.http.post("/v1/admin/promotions", headers=admin, content=chunks())
    assert streamed.status_code == 413 and error_of(streamed)[1] == "BODY_TOO_LARGE"


async def test_unknown_routes_and_methods(edge):
    missing = await edge.http.get("/v1/nothing/here")
    assert missing.status_code == 404 and error_of(missing) == (5, "ROUTE_NOT_FOUND")
    wrong = await edge.http.delete("/v1/admin/audit", headers=edge.auth("ops-1", "admin"))
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET"
    assert error_of(wrong)[1] == "METHOD_NOT_ALLOWED"


async def test_backend_down_is_503_with_a_clear_body(wallet):
    settings, _, _ = wallet
    down = dataclasses.replace(settings, addresses={**settings.addresses, "wallet": f"127.0.0.1:{_closed_port()}"})
    async with other_edge(down) as (http, _):
        headers = {"Authorization": f"Bearer {mint(down, 'fan-down')}"}
        response = await http.get("/v1/owners/fan-down/balance", headers=headers)
        assert response.status_code == 503 and error_of(response) == (14, "BACKEND_UNAVAILABLE")
        assert "fanbank.wallet.v1.WalletService is not reachable" in response.json()["message"]
        assert "Traceback" not in response.text
        stream = await http.get("/v1/owners/fan-down/balance:watch", headers=headers)
        assert stream.status_code == 503 and error_of(stream)[1] == "BACKEND_UNAVAILABLE"
        ready = await http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "NOT_SERVING"
        assert ready.json()["backends"]["fanbank.wallet.v1.WalletService"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
        assert (await http.get("/healthz")).status_code == 200


# ---- SSE ---------------------------------------------------------------------------------------


async def sse_events(response: httpx.Response):
    """Yields each event as a dict of its fields; comments gather under "comments"."""
    current: dict = {}
    async for line in response.aiter_lines():
        if line == "":
            if current:
                yield current
            current = {}
        elif line.startswith(":"):
            current.setdefault("comments", []).append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            current[name] = value.removeprefix(" ")


async def next_data(events) -> dict:
    """The next event that carries data, past comments (the preamble, keep-alives)."""
    async for event in events:
        if "data" in event:
            return event
    raise AssertionError("the stream ended")


async def _until(condition, what: str, attempts: int = 500) -> None:
    """Waits for an effect on the other side of a socket; bounded, never for time itself."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_watch_balance_streams_changes_and_cancels_on_disconnect(edge):
    owner = fresh("fan")
    await edge.grant(owner, 4)
    watchers = edge.wallet_service.watchers
    assert len(watchers) == 0
    url = f"/v1/owners/{owner}/balance:watch"
    async with edge.http.stream("GET", url, headers=edge.auth(owner)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
        preamble = await anext(events)
        assert "Last-Event-ID does not resume" in preamble["comments"][0]
        first = await anext(events)
        assert first["id"] == "1" and json.loads(first["data"])["balance"]["spendableAvailable"] == "4"
        assert len(watchers) == 1
        await edge.grant(owner, 6)
        second = await next_data(events)
        assert second["id"] == "2" and json.loads(second["data"])["balance"]["spendableAvailable"] == "10"
        keepalive = await anext(events)
        assert keepalive == {"comments": ["keep-alive"]}
    await _until(lambda: len(watchers) == 0, "the Wallet's watcher is released after the client left")
    await _until(lambda: edge.app.state.gateway.streams == 0, "the edge forgot the stream")


async def test_shutdown_ends_open_streams(wallet):
    settings, _, _ = wallet
    async with other_edge(settings, keepalive_seconds=30) as (http, server):
        owner = fresh("fan")
        headers = {"Authorization": f"Bearer {mint(settings, owner)}"}
        async with http.stream("GET", f"/v1/owners/{owner}/balance:watch", headers=headers) as response:
            events = sse_events(response)
            await next_data(events)
            server.config.app.state.gateway.draining.set()
            last = await anext(events)
            assert "shutting down" in last["comments"][0]
            assert [e async for e in events] == []


async def test_streams_are_bounded_in_number_and_duration(wallet):
    settings, _, _ = wallet
    owner = fresh("fan")
    headers = {"Authorization": f"Bearer {mint(settings, owner)}"}
    url = f"/v1/owners/{owner}/balance:watch"
    async with other_edge(settings, keepalive_seconds=30, max_streams=1, stream_max_seconds=1.0) as (http, server):
        async with http.stream("GET", url, headers=headers) as response:
            events = sse_events(response)
            await next_data(events)
            refused = await http.get(url, headers=headers)
            assert refused.status_code == 503 and error_of(refused)[1] == "TOO_MANY_STREAMS"
            rest = [e async for e in events]
        assert rest == [{"comments": ["this stream reached its longest duration; reconnect"]}]
        await _until(lambda: server.config.app.state.gateway.streams == 0, "the edge released the stream")


# ---- the rest of google.api.http, on a test-only service ------------------------------------------


class Things:
    """EdgeTestService: records each request and answers with who it saw calling."""

    def __init__(self, pb2):
        self.pb = pb2
        self.requests: list = []
        self.open_watches = 0

    def _thing(self, name: str):
        principal = auth.current_principal.get()
        return self.pb.Thing(name=name, caller_user=principal.user or "", caller_roles=sorted(principal.roles))

    async def GetThing(self, request, context):
        self.requests.append(request)
        if request.name.endswith("/missing"):
            raise not_found("THING_NOT_FOUND", f"no thing {request.name}")
        return self.pb.GetThingResponse(thing=self._thing(request.name), etag="e1")

    async def CreateThing(self, request, context):
        self.requests.append(request)
        thing = self._thing(f"{request.parent}/things/new")
        thing.MergeFrom(self.pb.Thing(display_name=request.thing.display_name, weight=request.thing.weight))
        return thing

    async def UpdateThing(self, request, context):
        self.requests.append(request)
        thing = self._thing(request.thing.name)
        thing.display_name = request.thing.display_name
        return thing

    async def CancelThing(self, request, context):
        self.requests.append(request)
        return self._thing(request.name)

    async def WatchThings(self, request, context):
        if request.parent == "owners/denied":
            raise denied("NOT_YOUR_THINGS", "not yours")
        self.open_watches += 1
        try:
            for i in range(max(request.count, 1)):
                yield self.pb.WatchThingsResponse(thing=self._thing(f"{request.parent}/things/{i}"), index=i)
            if request.count == 0:
                await asyncio.Event().wait()
            if request.count < 0:
                raise precondition("THINGS_GONE", "the things went away")
        finally:
            self.open_watches -= 1

    async def PurgeThings(self, request, context):
        return self.pb.PurgeThingsResponse()


def _compile_test_proto(out: Path):
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{REPO / 'tests' / 'protos'}",
        f"-I{REPO / 'protos'}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        "edgetest/v1/edge_test.proto",
    ]
    assert protoc.main(args) == 0
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("edgetest.v1.edge_test_pb2"), importlib.import_module(
            "edgetest.v1.edge_test_pb2_grpc"
        )
    finally:
        sys.path.remove(str(out))


@pytest.fixture(scope="module")
async def things(wallet, tmp_path_factory):
    settings, _, _ = wallet
    pb2, pb2_grpc = _compile_test_proto(tmp_path_factory.mktemp("edgetest"))
    servicer = Things(pb2)
    service_name = pb2.DESCRIPTOR.services_by_name["EdgeTestService"].full_name
    registration = Registration(service_name, servicer, pb2_grpc.add_EdgeTestServiceServicer_to_server)
    runtime = await start_server(settings, [registration], 0, host="127.0.0.1")
    app = build_app(settings, [pb2.DESCRIPTOR], {service_name: f"127.0.0.1:{runtime.port}"}, keepalive_seconds=0.2)
    try:
        async with serving(settings, app) as (http, _):
            yield http, servicer, app, settings
    finally:
        await runtime.stop()


def _as(settings, user="u1", *roles):
    return {"Authorization": f"Bearer {mint(settings, user, roles)}"}


async def test_test_service_routes_are_generated_from_its_descriptor(things):
    _, _, app, _ = things
    assert {b.key for b in app.state.bindings} == THING_ROUTES
    assert "PurgeThings" not in {b.method.name for b in app.state.bindings}


async def test_nested_path_variables_response_body_and_additional_bindings(things):
    http, servicer, _, settings = things
    headers = _as(settings, "u1", "creator", "admin")
    thing = await http.get("/v1/owners/o1/things/t1", headers=headers)
    # response_body: the body is the Thing itself, not the GetThingResponse around it.
    assert thing.status_code == 200 and thing.json()["name"] == "owners/o1/things/t1"
    assert thing.json()["callerUser"] == "u1" and thing.json()["callerRoles"] == ["admin", "creator"]
    assert servicer.requests[-1].name == "owners/o1/things/t1"
    whole = await http.get("/v1/things/t%2F2", headers=headers)
    assert whole.status_code == 200 and whole.json()["etag"] == "e1" and whole.json()["thing"]["name"] == "t/2"
    missing = await http.get("/v1/owners/o1/things/missing", headers=headers)
    assert missing.status_code == 404 and error_of(missing) == (5, "THING_NOT_FOUND")
    assert (await http.get("/v1/owners/o1/other/t1", headers=headers)).status_code == 404


async def test_body_field_query_parameters_and_custom_verbs(things):
    http, servicer, _, settings = things
    headers = _as(settings)
    created = await http.post(
        "/v1/owners/o1/things?request_id=r1&validateOnly=true&labels=a&labels=b",
        headers=headers,
        json={"displayName": "lamp", "weight": "7"},
    )
    assert created.status_code == 200, created.text
    assert created.json()["name"] == "owners/o1/things/new" and created.json()["weight"] == "7"
    request = servicer.requests[-1]
    assert (request.parent, request.request_id, request.validate_only, list(request.labels)) == (
        "owners/o1",
        "r1",
        True,
        ["a", "b"],
    )
    assert request.thing.display_name == "lamp"
    whole = await http.put(
        "/v1/owners/o2/things:create", headers=headers, json={"thing": {"displayName": "desk"}, "requestId": "r2"}
    )
    assert whole.status_code == 200 and servicer.requests[-1].request_id == "r2"
    assert servicer.requests[-1].parent == "owners/o2"
    mismatch = await http.put("/v1/owners/o2/things:create", headers=headers, json={"parent": "owners/o3"})
    assert mismatch.status_code == 400 and error_of(mismatch)[1] == "PATH_BODY_MISMATCH"
    updated = await http.patch(
        "/v1/owners/o1/things/t1?validate_only=true", headers=headers, json={"displayName": "new"}
    )
    assert updated.status_code == 200 and updated.json()["name"] == "owners/o1/things/t1"
    assert servicer.requests[-1].validate_only is True and servicer.requests[-1].thing.display_name == "new"
    renamed = await http.patch("/v1/owners/o1/things/t1", headers=headers, json={"name": "owners/o1/things/t9"})
    assert renamed.status_code == 400 and error_of(renamed)[1] == "PATH_BODY_MISMATCH"
    body_in_query = await http.post("/v1/owners/o1/things?thing.display_name=x", headers=headers, json={})
    assert body_in_query.status_code == 400 and error_of(body_in_query)[1] == "UNKNOWN_FIELD"
    cancelled = await http.post("/v1/owners/o1/things/t1:cancel", headers=headers, json={"reason": "moved"})
    assert cancelled.status_code == 200 and servicer.requests[-1].name == "owners/o1/things/t1"
    assert servicer.requests[-1].reason == "moved"
    wrong = await http.delete("/v1/owners/o1/things/t1", headers=headers)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, PATCH"


async def test_streams_end_fail_and_cancel(things):
    http, servicer, app, settings = things
    headers = _as(settings)
    async with http.stream("GET", "/v1/owners/o1/things:watch?count=3", headers=headers) as response:
        got = [e async for e in sse_events(response) if "data" in e]
    assert [(e["id"], json.loads(e["data"])["index"]) for e in got] == [("1", 0), ("2", 1), ("3", 2)]
    async with http.stream("GET", "/v1/owners/o1/things:watch?count=-1", headers=headers) as response:
        got = [e async for e in sse_events(response) if "data" in e]
    assert got[-1]["event"] == "error"
    failure = json.loads(got[-1]["data"])
    assert failure["code"] == 9 and failure["details"][0]["reason"] == "THINGS_GONE"
    refused = await http.get("/v1/owners/denied/things:watch", headers=headers)
    assert refused.status_code == 403 and error_of(refused)[1] == "NOT_YOUR_THINGS"
    async with http.stream("GET", "/v1/owners/o1/things:watch?count=0", headers=headers) as response:
        events = sse_events(response)
        await next_data(events)
        assert servicer.open_watches == 1
    await _until(lambda: servicer.open_watches == 0, "the backend stream was cancelled")
    await _until(lambda: app.state.gateway.streams == 0, "the edge released the stream")


async def test_openapi_for_nested_templates(things):
    http, _, _, _ = things
    document = (await http.get("/openapi.json")).json()
    validate_openapi(document)
    operation = document["paths"]["/v1/{thing.name}"]["patch"]
    assert operation["parameters"][0]["schema"]["pattern"] == "^owners/[^/]+/things/[^/]+$"
    assert {p["name"] for p in operation["parameters"]} == {"thing.name", "validate_only"}
    create = document["paths"]["/v1/{parent}/things"]["post"]
    assert {p["name"] for p in create["parameters"]} == {"parent", "request_id", "validate_only", "labels"}
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/edgetest.v1.Thing"
    }


# ---- OpenAPI, health, CORS ----------------------------------------------------------------------


def _schemas(node):
    if isinstance(node, dict):
        if "schema" in node:
            yield node["schema"]
        for key, value in node.items():
            if key in ("schemas", "properties"):
                yield from value.values()
            yield from _schemas(value)
    elif isinstance(node, list):
        for item in node:
            yield from _schemas(item)


async def test_openapi_document(edge):
    response = await edge.http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    validate_openapi(document)
    assert document["openapi"] == "3.1.0"
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if not path.startswith(("/healthz", "/readyz", "/openapi", "/webhooks/", "/overlay/"))
    }
    assert operations == {(m, t) for m, t in WALLET_ROUTES}
    assert document["paths"]["/webhooks/livekit"]["post"]["security"] == []
    assert set(document["paths"]) >= {"/overlay/{token}", "/overlay/{token}/events"}
    assert all(schema != {} for schema in _schemas(document)), "an empty schema says nothing"
    schemas = document["components"]["schemas"]
    assert "google.rpc.Status" in schemas and "google.rpc.ErrorInfo" not in schemas
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
    }
    assert document["security"] == [{"bearerAuth": []}]
    assert document["paths"]["/healthz"]["get"]["security"] == []
    entries = document["paths"]["/v1/owners/{owner_id}/entries"]["get"]
    assert [p["name"] for p in entries["parameters"]] == ["owner_id", "asset", "code", "page_size", "page_token"]
    ok = entries["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/fanbank.wallet.v1.ListEntriesResponse"}
    assert entries["responses"]["default"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "google.rpc.Status"
    )
    adjust = document["paths"]["/v1/admin/adjustments"]["post"]
    assert adjust["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("AdjustBalanceRequest")
    watch = document["paths"]["/v1/owners/{owner_id}/balance:watch"]["get"]["responses"]["200"]["content"]
    assert watch["text/event-stream"]["x-event-data"]["$ref"].endswith("WatchBalanceResponse")
    amount = schemas["fanbank.wallet.v1.Account"]["properties"]["posted"]
    assert amount["type"] == "string" and amount["format"] == "int64"


async def test_health_and_readiness(edge):
    assert (await edge.http.get("/healthz")).json() == {"status": "SERVING"}
    ready = await edge.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "SERVING", "backends": {"fanbank.wallet.v1.WalletService": "SERVING"}}


async def test_cors_from_configuration(edge):
    preflight = await edge.http.options(
        "/v1/owners/fan-1/balance",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN
    stranger = await edge.http.options(
        "/v1/owners/fan-1/balance", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers
    actual = await edge.http.get("/v1/owners/fan-1/balance", headers={**edge.auth("fan-1"), "Origin": ORIGIN})
    assert actual.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in actual.headers["access-control-expose-headers"].lower()


def test_rules_refuse_annotations_they_cannot_serve():
    request = pb.ListEntriesRequest.DESCRIPTOR
    template = rules.parse_template("/v1/{owner_id=owners/*}/x:y", request)
    assert template.verb == "y" and template.regex.match("/v1/owners/a/x:y").group("v0") == "owners/a"
    assert template.openapi_path == "/v1/{owner_id}/x:y"
    for bad in ("v1/x", "/v1/{nope}", "/v1/{owner_id", "/v1//x", "/v1/{page_size}/{page_size}", "/v1/{asset}x"):
        with pytest.raises(rules.RuleError):
            rules.parse_template(bad, request)
    assert rules.backend_of("fanbank.wallet.v1.WalletService") == "wallet"
    with pytest.raises(rules.RuleError):
        rules.backend_of("edgetest.v1.EdgeTestService")


# ---- processes ----------------------------------------------------------------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANBANK_") or k == "FANBANK_SERVICE_KEYS"}
    env.update(FANBANK_LOG_LEVEL="WARNING", **extra)
    return env


def _kill_group(process: subprocess.Popen) -> None:
    """A failed test must not leave `fanbank up`'s children (database, services, edge) behind."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _wait_http(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} never answered")


def test_serve_edge_exits_cleanly_on_sigterm():
    port = _closed_port()
    env = _clean_env(FANBANK_EDGE_PORT=str(port), FANBANK_WALLET_ADDR=f"127.0.0.1:{_closed_port()}")
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "serve", "edge"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", process)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        assert "Traceback" not in output
    finally:
        if process.poll() is None:
            _kill_group(process)


def _line_reader(process: subprocess.Popen) -> queue.Queue:
    """Lines of the process's output through a thread, so waiting for one can time out."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _read_until(lines: queue.Queue, marker: str, seconds: float = 120) -> str:
    seen = ""
    deadline = time.monotonic() + seconds
    while marker not in seen:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        assert line is not None, f"the process exited: {seen}"
        seen += line
    return seen


def test_up_prints_the_edge_and_a_curl_that_works(tmp_path):
    env = _clean_env(
        FANBANK_DATA_DIR=str(tmp_path / "data"),
        FANBANK_WALLET_PORT=str(_closed_port()),
        FANBANK_EDGE_PORT=str(_closed_port()),
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=REPO,
    )
    try:
        lines = _line_reader(process)
        seen = _read_until(lines, "try it:")
        assert "Ctrl-C stops everything" in seen, seen
        assert re.search(r"edge\s+http://127\.0\.0\.1:\d+\s+health: SERVING", seen), seen
        command = re.search(r"try it:\s+(.*)", seen).group(1)
        if shutil.which("curl") is None:  # a bare machine: the same request without curl
            token_command = re.search(r"\$\((.*?)\)", command).group(1)
            token = subprocess.run(
                ["bash", "-c", token_command], env=env, capture_output=True, text=True, check=True, cwd=REPO
            ).stdout.strip()
            answer = httpx.get(command.split()[-1], headers={"Authorization": f"Bearer {token}"}).text
        else:
            answer = subprocess.run(
                ["bash", "-c", command], env=env, capture_output=True, text=True, check=True, cwd=REPO
            ).stdout
        assert json.loads(answer)["ownerId"] == "fan-1", answer
        process.send_signal(signal.SIGTERM)
        rest = _read_until(lines, "stopped", 60)
        assert process.wait(timeout=30) == 0, rest
        assert "Traceback" not in seen + rest
    finally:
        if process.poll() is None:
            _kill_group(process)
