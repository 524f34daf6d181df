"""The edge's live and provider-facing parts against real Wallet, Gifts and Billing services, over
real HTTP: SSE resume with Last-Event-ID, per-IP and per-user rate limits in Redis, the LiveKit
webhook handed to Billing, and the creator's overlay page and feed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import re
import sys
import uuid
from pathlib import Path

import httpx
import pytest
from livekit import api as livekit

from services.edge.app import build_app
from services.edge.token import mint
from shared.config import DEV_LIVEKIT_API_KEY, DEV_LIVEKIT_API_SECRET
from shared.gen.fanbank.billing.v1 import billing_service_pb2 as bpb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from shared.watch import Hub
from tests.harness import Caller, migrated_engine, running, settings_for
from tests.integration.test_edge import _until, error_of, next_data, serving, sse_events

# High enough that the tests sharing this edge never meet them; the rate-limit tests build their own.
ROOMY = {
    "edge_ip_rate_per_second": 100_000,
    "edge_ip_burst": 100_000,
    "edge_user_rate_per_second": 100_000,
    "edge_user_burst": 100_000,
}


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@dataclasses.dataclass
class Live:
    settings: object
    http: httpx.AsyncClient
    app: object
    platform: Caller  # the platform's backend: funds fans, sets up calls
    billing_platform: Caller
    gifts_hub: Hub  # the Gifts process's live-events hub

    def auth(self, user: str, *roles: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(self.settings, user, roles)}"}

    async def fund(self, owner: str, amount: int) -> None:
        transfer = wpb.TransferSpec(
            transfer_id=uid("buy"),
            debit=wpb.AccountRef(owner_id="", code=wpb.ACCOUNT_CODE_PROVIDER_CLEARING, asset=wpb.ASSET_TOKEN),
            credit=wpb.AccountRef(owner_id=owner, code=wpb.ACCOUNT_CODE_USER_PURCHASED, asset=wpb.ASSET_TOKEN),
            amount=amount,
            code=wpb.TRANSFER_CODE_PURCHASE,
        )
        await self.platform.wallet.Transfer(wpb.TransferRequest(transfer=transfer))

    async def tip(
        self, fan: str, creator: str, amount: int, message: str = "", name: str = "", stream: str = ""
    ) -> httpx.Response:
        body = {
            "requestId": uid("tip"),
            "senderId": fan,
            "creatorId": creator,
            "amountTokens": str(amount),
            "message": message,
            "senderDisplayName": name,
            "contextType": "CONTEXT_TYPE_STREAM" if stream else "CONTEXT_TYPE_PROFILE",
            "contextId": stream or creator,
        }
        response = await self.http.post("/v1/tips", headers=self.auth(fan), json=body)
        assert response.status_code == 200, response.text
        assert response.json()["tip"]["status"] == "TIP_STATUS_COMPLETED", response.text
        return response

    async def rotate(self, creator: str) -> str:
        response = await self.http.post(
            f"/v1/creators/{creator}/overlay-token:rotate",
            headers=self.auth(creator, "creator"),
            json={"requestId": uid("rot")},
        )
        assert response.status_code == 200, response.text
        return response.json()["overlayToken"]


@contextlib.asynccontextmanager
async def live_stack(database_url, redis_url, **overrides):
    base = settings_for(database_url, redis_url, shutdown_grace_seconds=1, **{**ROOMY, **overrides})
    engine = await migrated_engine(base, pool_size=20)
    async with contextlib.AsyncExitStack() as stack:
        wallet_target, _ = await stack.enter_async_context(running("wallet", base, engine))
        settings = dataclasses.replace(base, addresses={**base.addresses, "wallet": wallet_target})
        services = {}
        for name in ("gifts", "billing", "streams"):
            target, services[name] = await stack.enter_async_context(running(name, settings, engine))
            settings = dataclasses.replace(settings, addresses={**settings.addresses, name: target})
        app = build_app(settings, keepalive_seconds=0.5)
        http, _ = await stack.enter_async_context(serving(settings, app))
        platform = Caller(settings, wallet_target)
        billing_platform = Caller(settings, settings.addresses["billing"])
        stack.push_async_callback(platform.close)
        stack.push_async_callback(billing_platform.close)
        yield Live(settings, http, app, platform, billing_platform, services["gifts"].live.hub)
    await engine.dispose()


@pytest.fixture(scope="module")
async def live(database_url, redis_url):
    async with live_stack(database_url, redis_url) as stack:
        yield stack


def _amount(event: dict) -> int:
    return int(json.loads(event["data"])["event"]["amountTokens"])


# ---- SSE resume ----------------------------------------------------------------------------------


async def test_last_event_id_resumes_a_feed_without_gap_or_duplicate(live):
    fan, creator = uid("fan"), uid("creator")
    await live.fund(fan, 1000)
    url = f"/v1/creators/{creator}/alerts:watch"
    headers = live.auth(creator, "creator")
    async with live.http.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        events = sse_events(response)
        preamble = await anext(events)
        assert "reconnect with Last-Event-ID to resume" in preamble["comments"][0]
        await live.tip(fan, creator, 1)
        await live.tip(fan, creator, 2)
        first, second = await next_data(events), await next_data(events)
    assert [_amount(first), _amount(second)] == [1, 2]
    # Each id is the event's resume token, not a per-connection number.
    assert second["id"] == json.loads(second["data"])["resumeToken"] and second["id"] != first["id"]
    for amount in (3, 4):  # while nobody is connected
        await live.tip(fan, creator, amount)
    async with live.http.stream("GET", url, headers={**headers, "Last-Event-ID": second["id"]}) as response:
        assert response.status_code == 200
        events = sse_events(response)
        replayed = [await next_data(events), await next_data(events)]
        await live.tip(fan, creator, 5)
        tail = await next_data(events)
    got = [*replayed, tail]
    assert [_amount(e) for e in got] == [3, 4, 5]
    assert len({e["id"] for e in [first, second, *got]}) == 5
    # A resume token in the query wins over the header (a client that chose its own position).
    query = f"{url}?resumeToken={first['id']}"
    async with live.http.stream("GET", query, headers={**headers, "Last-Event-ID": got[-1]["id"]}) as response:
        assert _amount(await next_data(sse_events(response))) == 2
    foreign = await live.http.get(url, headers={**headers, "Last-Event-ID": "not-a-token"})
    assert foreign.status_code == 400 and error_of(foreign)[1] == "INVALID_RESUME_TOKEN"
    too_long = await live.http.get(url, headers={**headers, "Last-Event-ID": "x" * 2000})
    assert too_long.status_code == 400 and error_of(too_long)[1] == "INVALID_FIELD_VALUE"


def _feeds_for(live, creator: str) -> set[int]:
    """The distinct backend feeds the edge holds open for `creator`'s alerts."""
    feeds = live.app.state.gateway.feeds.feeds.values()
    return {id(f) for f in feeds if f.key[1] is not None and f.key[1][0] == creator and not f.ended}


async def test_clients_of_one_user_share_one_backend_stream(live):
    fan, creator = uid("fan"), uid("creator")
    await live.fund(fan, 1000)
    url = f"/v1/creators/{creator}/alerts:watch"
    headers = live.auth(creator, "creator")
    async with contextlib.AsyncExitStack() as stack:

        async def open_client(extra: dict[str, str] | None = None, as_admin: bool = False):
            who = live.auth(creator, "creator", "admin") if as_admin else headers
            response = await stack.enter_async_context(live.http.stream("GET", url, headers={**who, **(extra or {})}))
            assert response.status_code == 200
            return response, sse_events(response)

        _, first_events = await open_client()  # a quiet feed: answered after the first-event wait
        started = asyncio.get_running_loop().time()
        _, early = await open_client()  # joins at once: the feed has passed the backend's checks
        assert asyncio.get_running_loop().time() - started < 1.0
        await live.tip(fan, creator, 1)
        one = await next_data(first_events)
        assert _amount(one) == 1 and _amount(await next_data(early)) == 1
        assert len(_feeds_for(live, creator)) == 1
        # The same user asking the same thing from now, or resuming from the feed's position, joins it.
        _, joined = await open_client()
        _, resumed = await open_client({"Last-Event-ID": one["id"]})
        assert len(_feeds_for(live, creator)) == 1
        # Other roles are another principal (the service may decide otherwise): a feed of its own.
        _, admin = await open_client(as_admin=True)
        assert len(_feeds_for(live, creator)) == 2
        await live.tip(fan, creator, 2)
        got = [await next_data(events) for events in (first_events, joined, resumed, admin)]
        assert [_amount(e) for e in got] == [2, 2, 2, 2]
        assert len({e["id"] for e in got}) == 1 and got[0]["id"] != one["id"]
        # Resuming from a position the feed has passed is not a seat on it: its own call replays.
        _, behind = await open_client({"Last-Event-ID": one["id"]})
        assert len(_feeds_for(live, creator)) == 3
        assert _amount(await next_data(behind)) == 2
    # Everyone gone: every backend call is cancelled and the index forgets the feeds.
    await _until(lambda: not _feeds_for(live, creator), "the feeds were closed")


async def test_shared_feeds_lose_and_repeat_nothing_across_reconnects(live):
    """Twelve clients of one user share feeds; half of them drop out and come back with
    Last-Event-ID while tips keep landing: every client sees every tip once, in order."""
    fan, creator = uid("fan"), uid("creator")
    await live.fund(fan, 1000)
    url = f"/v1/creators/{creator}/alerts:watch"
    headers = live.auth(creator, "creator")
    seen: list[list[tuple[str, int]]] = [[] for _ in range(12)]

    async def watch(index: int, until: int, last_id: str | None, ready: asyncio.Event) -> str | None:
        extra = {"Last-Event-ID": last_id} if last_id else {}
        async with live.http.stream("GET", url, headers={**headers, **extra}) as response:
            assert response.status_code == 200
            events = sse_events(response)
            ready.set()
            while len(seen[index]) < until:
                event = await next_data(events)
                seen[index].append((event["id"], _amount(event)))
        return seen[index][-1][0] if seen[index] else last_id

    async def tips(amounts) -> None:
        for amount in amounts:
            await live.tip(fan, creator, amount)

    readies = [asyncio.Event() for _ in range(12)]
    stayers = [asyncio.create_task(watch(i, 10, None, readies[i])) for i in range(6)]
    leavers = [asyncio.create_task(watch(i, 4, None, readies[i])) for i in range(6, 12)]
    await asyncio.gather(*(r.wait() for r in readies))
    assert len(_feeds_for(live, creator)) == 1  # a storm of identical clients: one backend call
    await tips(range(1, 5))
    last_ids = await asyncio.gather(*leavers)
    # While they are away, more tips land; they come back from where each stopped.
    await tips(range(5, 8))
    back = [asyncio.Event() for _ in range(6)]
    returners = [asyncio.create_task(watch(6 + i, 10, last_ids[i], back[i])) for i in range(6)]
    await asyncio.gather(*(r.wait() for r in back))
    await tips(range(8, 11))
    await asyncio.gather(*stayers, *returners)
    for got in seen:
        assert [amount for _, amount in got] == list(range(1, 11))
        assert len({event_id for event_id, _ in got}) == 10
    assert len({tuple(got) for got in seen}) == 1  # the same ids everywhere
    await _until(lambda: not _feeds_for(live, creator), "the feeds were closed")


# ---- rate limits -----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def limited_edge(live, **limits):
    settings = dataclasses.replace(live.settings, **limits)
    app = build_app(settings, rate_limit_prefix=f"fanbank:test:{uid('rl')}")
    async with serving(settings, app) as (http, _):
        yield http


def _retry_after(response: httpx.Response) -> int:
    assert response.status_code == 429 and error_of(response) == (8, "RATE_LIMITED"), response.text
    details = {d["@type"].rsplit(".", 1)[1]: d for d in response.json()["details"]}
    assert details["RetryInfo"]["retryDelay"].endswith("s")
    return int(response.headers["retry-after"])


async def test_public_routes_need_no_token_and_private_ones_ask_for_one(live):
    # The gift catalog and a creator's call rate are public: an anonymous visitor reads them.
    catalog = await live.http.get("/v1/gifts")
    assert catalog.status_code == 200, catalog.text
    creator = uid("creator")
    settings = {"rateTokensPerMinute": "100", "available": True}
    put = await live.http.put(f"/v1/creators/{creator}/call-settings", headers=live.auth(creator), json=settings)
    assert put.status_code == 200, put.text
    rate = await live.http.get(f"/v1/creators/{creator}/call-settings")
    assert rate.status_code == 200 and rate.json()["settings"]["rateTokensPerMinute"] == "100", rate.text
    # Anything that needs somebody answers 401 with the challenge, never what the service would say.
    for method, url, body in (
        ("GET", f"/v1/owners/{creator}/balance", None),
        ("PUT", f"/v1/creators/{creator}/call-settings", settings),
        (
            "POST",
            "/v1/tips",
            {"requestId": uid("tip"), "senderId": creator, "creatorId": uid("c"), "amountTokens": "5"},
        ),
    ):
        response = await live.http.request(method, url, json=body)
        assert response.status_code == 401, (url, response.text)
        assert response.headers["www-authenticate"].startswith('Bearer realm="fanbank"')
        assert response.json()["details"][0]["reason"] == "TOKEN_MISSING"


async def test_per_user_limit(live):
    limits = {"edge_ip_rate_per_second": 0, "edge_user_rate_per_second": 1, "edge_user_burst": 3}
    async with limited_edge(live, **limits) as http:
        fan, other = uid("fan"), uid("fan")
        url = f"/v1/owners/{fan}/balance"
        answers = [await http.get(url, headers=live.auth(fan)) for _ in range(4)]
        assert [r.status_code for r in answers[:3]] == [200, 200, 200]
        assert _retry_after(answers[3]) >= 1
        # Another user from the same address is not held back by the first one's limit.
        assert (await http.get(f"/v1/owners/{other}/balance", headers=live.auth(other))).status_code == 200


async def test_per_ip_limit_with_exempt_probes(live):
    limits = {"edge_ip_rate_per_second": 1, "edge_ip_burst": 4, "edge_user_rate_per_second": 0}
    async with limited_edge(live, **limits) as http:
        users = [uid("fan") for _ in range(5)]
        answers = [await http.get(f"/v1/owners/{u}/balance", headers=live.auth(u)) for u in users[:3]]
        assert [r.status_code for r in answers] == [200, 200, 200]
        # A bad token counts against its address before it is refused.
        assert (await http.get("/v1/owners/x/balance", headers={"Authorization": "Bearer nope"})).status_code == 401
        limited = await http.get(f"/v1/owners/{users[3]}/balance", headers=live.auth(users[3]))
        assert _retry_after(limited) >= 1
        assert (await http.get("/v1/owners/x/balance", headers={"Authorization": "Bearer nope"})).status_code == 429
        for probe in ("/healthz", "/readyz", "/openapi.json"):
            assert (await http.get(probe)).status_code == 200, probe


async def test_per_ip_limit_counts_the_client_behind_a_trusted_proxy(live):
    limits = {"edge_ip_rate_per_second": 1, "edge_ip_burst": 2, "edge_user_rate_per_second": 0}
    fan = uid("fan")
    url, token = f"/v1/owners/{fan}/balance", live.auth(fan)

    def via(client_ip: str) -> dict[str, str]:
        return {**token, "X-Forwarded-For": f"{client_ip}, 127.0.0.1"}  # the last proxy's own hop

    # The test client connects from 127.0.0.1: as a trusted proxy, its X-Forwarded-For names the client.
    async with limited_edge(live, **limits, edge_trusted_proxies=("127.0.0.0/8",)) as http:
        first = [await http.get(url, headers=via("198.51.100.7")) for _ in range(3)]
        assert [r.status_code for r in first] == [200, 200, 429]
        assert (await http.get(url, headers=via("198.51.100.8"))).status_code == 200  # another client
    # Not trusted (the default): the header is the client's own word, and the peer is what counts.
    async with limited_edge(live, **limits) as http:
        answers = [await http.get(url, headers=via(f"198.51.100.{i}")) for i in (20, 21, 22)]
        assert [r.status_code for r in answers] == [200, 200, 429]


async def test_without_redis_there_are_no_limits_and_the_log_says_so(live, caplog):
    settings = dataclasses.replace(live.settings, redis_url=None, edge_user_rate_per_second=1, edge_user_burst=1)
    with caplog.at_level(logging.WARNING, logger="services.edge.app"):
        app = build_app(settings)
    assert any("rate limits off" in r.getMessage() for r in caplog.records)
    async with serving(settings, app) as (http, _):
        fan = uid("fan")
        answers = [await http.get(f"/v1/owners/{fan}/balance", headers=live.auth(fan)) for _ in range(5)]
        assert [r.status_code for r in answers] == [200] * 5


# ---- the LiveKit webhook -----------------------------------------------------------------------------


def signed(event: dict, secret: str = DEV_LIVEKIT_API_SECRET) -> tuple[bytes, str]:
    body = json.dumps(event).encode()
    digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
    return body, livekit.AccessToken(DEV_LIVEKIT_API_KEY, secret).with_sha256(digest).to_jwt()


async def test_livekit_webhook_is_handed_to_billing(live):
    fan, creator = uid("fan"), uid("creator")
    await live.fund(fan, 1000)
    billing = live.billing_platform.billing
    await billing.SetCallSettings(
        bpb.SetCallSettingsRequest(creator_id=creator, rate_tokens_per_minute=100, available=True)
    )
    started = await billing.StartCall(
        bpb.StartCallRequest(request_id=uid("start"), fan_id=fan, creator_id=creator, rate_tokens_per_minute=100)
    )
    call = started.call
    left = {"event": "participant_left", "id": uid("EV"), "room": {"name": call.media_channel}}

    async def post(body: bytes, token: str | None) -> httpx.Response:
        headers = {"Content-Type": "application/webhook+json"}
        if token is not None:
            headers["Authorization"] = token
        return await live.http.post("/webhooks/livekit", content=body, headers=headers)

    async def status() -> int:
        return (await billing.GetCall(bpb.GetCallRequest(call_id=call.call_id))).call.status

    forged = await post(*signed(left, secret="another-secret-than-the-livekit-one-we-trust"))
    assert forged.status_code == 401 and error_of(forged) == (16, "WEBHOOK_SIGNATURE_INVALID")
    body, token = signed(left)
    changed = await post(json.dumps({**left, "room": {"name": "call-other"}}).encode(), token)
    assert changed.status_code == 401 and error_of(changed)[1] == "WEBHOOK_SIGNATURE_INVALID"
    unsigned = await post(body, None)
    assert unsigned.status_code == 401
    too_big = await post(b" " * (live.settings.edge_max_body_bytes + 1), token)
    assert too_big.status_code == 413 and error_of(too_big)[1] == "BODY_TOO_LARGE"
    assert await status() == bpb.CALL_STATUS_ACTIVE
    ok = await post(body, token)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {
        "eventId": left["id"],
        "event": "participant_left",
        "duplicate": False,
        "callId": call.call_id,
        "callEnded": True,
    }
    assert await status() == bpb.CALL_STATUS_ENDED
    again = await post(body, f"Bearer {token}")
    assert again.status_code == 200 and again.json()["duplicate"] is True


# ---- the overlay ----------------------------------------------------------------------------------------


async def test_overlay_page_feed_and_rotation(live, caplog):
    caplog.set_level(logging.DEBUG)
    fan, creator = uid("fan"), uid("creator")
    await live.fund(fan, 1000)
    token = await live.rotate(creator)
    page = await live.http.get(f"/overlay/{token}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'nonce-" in policy
    assert "new EventSource(" in page.text and "innerHTML" not in page.text
    for bogus in ("ovl_" + "A" * 43, "nothing", "ovl_%2F..%2F"):
        missing = await live.http.get(f"/overlay/{bogus}")
        assert missing.status_code == 404 and error_of(missing)[1] in ("OVERLAY_NOT_FOUND", "ROUTE_NOT_FOUND")
    async with live.http.stream("GET", f"/overlay/{token}/events") as response:
        assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
        events = sse_events(response)
        await live.tip(fan, creator, 7, message="hi", name="Ann")
        alert = await next_data(events)
        data = json.loads(alert["data"])
        assert alert["id"] == data["resumeToken"]
        assert (data["event"]["senderDisplayName"], data["event"]["amountTokens"]) == ("Ann", "7")
        new = await live.rotate(creator)
        await live.tip(fan, creator, 8)  # the rotated token's next event ends its feed instead
        rest = [e async for e in events if "data" in e]
    assert [e.get("event") for e in rest] == ["error"]
    assert "id" not in rest[0]  # an error must not replace the last resume token
    assert json.loads(rest[0]["data"])["details"][0]["reason"] == "OVERLAY_TOKEN_INVALID"
    assert (await live.http.get(f"/overlay/{token}")).status_code == 404
    stale = await live.http.get(f"/overlay/{token}/events")
    assert stale.status_code == 403 and error_of(stale)[1] == "OVERLAY_TOKEN_INVALID"
    # The new token resumes where the old one stopped: the 8-token tip is not lost.
    async with live.http.stream("GET", f"/overlay/{new}/events", headers={"Last-Event-ID": alert["id"]}) as response:
        assert _amount(await next_data(sse_events(response))) == 8
    # What the servers logged (the test's own HTTP client logs its URLs; it is not the edge).
    server_side = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in server_side)
    assert token not in logged and new not in logged


# ---- the overlay in a browser -------------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()


async def test_overlay_in_a_browser_shows_alerts_as_text(live, tmp_path):
    """Debian's chromium driven by playwright (never a downloaded browser; .ci/run installs it)."""
    if not HAVE_CHROMIUM and not os.environ.get("CI"):
        pytest.skip("no /usr/bin/chromium here (apt-get install chromium); CI installs it and runs this")
    from playwright.async_api import async_playwright

    fan, creator, stream = uid("fan"), uid("creator"), uid("stream")
    await live.fund(fan, 1000)
    goal = await live.http.put(
        f"/v1/creators/{creator}/streams/{stream}/goal",
        headers=live.auth(creator, "creator"),
        json={"requestId": uid("goal"), "title": "New mic", "targetTokens": "100"},
    )
    assert goal.status_code == 200, goal.text
    token = await live.rotate(creator)
    attack = "<img src=x onerror=alert(1)>"
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 720})
            dialogs: list[str] = []
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), asyncio.ensure_future(dialog.dismiss())))
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(f"{live.http.base_url}/overlay/{token}?hold=1000")
            # The feed is open once the edge holds its stream and Gifts has subscribed it (from then on,
            # "now" is fixed); the page has no other way to say so.
            await _until_streams(live, 1)
            await _until_subscribed(live, f"alerts:{creator}")
            await live.tip(fan, creator, 42, message="great show", name="Ann", stream=stream)
            alert = page.locator(".alert", has_text="Ann")
            await alert.wait_for(timeout=15_000)
            assert "tipped 42 tokens" in await alert.inner_text()
            assert await page.locator(".alert .message").inner_text() == "great show"
            await page.locator("#goal.shown").wait_for(timeout=15_000)
            assert await page.locator("#goal .label").inner_text() == "Goal: 42 / 100 tokens"
            shot = tmp_path / "overlay.png"
            await page.screenshot(path=str(shot))
            assert shot.stat().st_size > 0
            background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
            assert background == "rgba(0, 0, 0, 0)"
            await live.tip(fan, creator, 9, message=attack, name="<b>Eve</b>")
            hostile = page.locator(".alert", has_text="<b>Eve</b>")
            await hostile.wait_for(timeout=15_000)
            assert await hostile.locator(".message").inner_text() == attack
            assert await page.locator("img").count() == 0 and await page.locator("b").count() == 0
            await page.screenshot(path=str(tmp_path / "overlay-hostile.png"))
            # A moderator hides a message while its alert waits its turn: it shows without it.
            sent = await live.tip(fan, creator, 7, message="a spoiler", name="Zed")
            hidden = await live.http.post(
                f"/v1/tips/{sent.json()['tip']['tipId']}:hideMessage",
                headers=live.auth("ops-1", "admin"),
                json={"requestId": uid("hide")},
            )
            assert hidden.status_code == 200, hidden.text
            late = page.locator(".alert", has_text="Zed")
            await late.wait_for(timeout=15_000)
            assert "tipped 7 tokens" in await late.inner_text()
            assert await late.locator(".message").count() == 0
            assert dialogs == [] and errors == []
        finally:
            await browser.close()


async def _until_subscribed(live, channel: str) -> None:
    for _ in range(1000):
        if live.gifts_hub.subscribers_of(channel):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"Gifts never subscribed {channel}")


async def _until_streams(live, count: int) -> None:
    for _ in range(1000):
        if live.app.state.gateway.streams >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the overlay page never opened its feed")


# ---- schemathesis -----------------------------------------------------------------------------------------

# Streams stay open by design; their SSE framing and resume are tested above.
STREAMING_PATHS = r"(:watch|/events)$"


async def test_schemathesis_against_the_openapi_document(live, tmp_path):
    """A bounded run (a few examples per operation, positive and negative) as an admin who is also a
    creator: no 5xx, every status documented, every JSON body matching its schema."""
    token = mint(live.settings, "schema-admin", ("admin", "creator"), ttl_seconds=600)
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "run",
        f"{live.http.base_url}/openapi.json",
        "--checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        "--max-examples=3",
        "--max-time=40",
        "--request-timeout=5",
        "--workers=1",
        "--seed=1",
        "--no-shrink",
        "--generation-database=none",
        f"--exclude-path-regex={STREAMING_PATHS}",
        f"--header=Authorization: Bearer {token}",
        f"--report-dir={tmp_path}",
        "--no-color",
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path
    )
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    text = output.decode(errors="replace")
    print(text[-4000:])  # shown with -s or on failure: what was tested
    assert process.returncode == 0, text[-6000:]
    assert re.search(r"\b[1-9][0-9]* passed\b", text), text[-3000:]
