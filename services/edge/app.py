"""The edge's ASGI app: one route per `google.api.http` binding, plus health and the OpenAPI
document. No route is written by hand; a newly annotated RPC appears when its stubs are imported.

Per request: bearer JWT → body (bounded) → protobuf request → backend call signed as the edge, acting
for the token's user → JSON (or SSE for server-streaming RPCs). Services authorize; the edge only
authenticates.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterable

import grpc
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route

from services.edge import handlers, openapi, overlay, rules, transcode, webhooks
from services.edge.bearer import User, Verifier, token_missing
from services.edge.errors import EdgeError, from_rpc_error, internal, status_response
from services.edge.ratelimit import RateLimiter
from services.edge.rules import Binding
from services.edge.sse import Feed, FeedIndex, Subscriber, feed_key
from shared import auth, client
from shared.config import ConfigError, Settings

log = logging.getLogger(__name__)

IDENTITY = "edge"
# An SSE stream is re-opened by its client after this long, which also moves long-lived streams
# across replicas.
STREAM_MAX_SECONDS = 3600
MAX_STREAMS = 10_000
KEEPALIVE_SECONDS = 15.0
# How long a stream's first message may delay the response headers: an early failure then still
# gets its proper HTTP status instead of a 200 followed by an error event.
FIRST_EVENT_WAIT_SECONDS = 2.0
READY_TIMEOUT_SECONDS = 1.0


class Gateway:
    """Channels to the backends (one per address, created inside the running loop) and the state
    every route shares."""

    def __init__(
        self,
        settings: Settings,
        backends: dict[str, str],
        keepalive_seconds: float,
        max_streams: int,
        stream_max_seconds: float,
        limiter: RateLimiter | None = None,
    ):
        settings.key_for(IDENTITY)  # no key for the edge's identity: refuse to start, not fail each call
        self.settings = settings
        self.stream_max_seconds = stream_max_seconds
        self.backends = backends
        self.verifier = Verifier(settings)
        self._renderers: dict[tuple, Callable] = {}
        self.keepalive_seconds = keepalive_seconds
        self.max_streams = max_streams
        self.streams = 0
        self.draining = asyncio.Event()
        # Joinable SSE feeds; a newcomer gets at least half a stream's life before it must reconnect.
        self.feeds = FeedIndex(stream_max_seconds / 2)
        self.limiter = limiter
        self._channels: dict[str, client.SignedChannel] = {}
        self._callables: dict[tuple[str, str], object] = {}

    async def admit(self, scope, user: User | None) -> None:
        """Takes this request from its client IP's bucket and its user's; 429 when either is empty."""
        if self.limiter is None:
            return
        client_address = scope.get("client")
        wait_ms = await self.limiter.admit(client_address[0] if client_address else None, user.id if user else None)
        if wait_ms:
            seconds = max(1, math.ceil(wait_ms / 1000))
            raise EdgeError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "RATE_LIMITED",
                f"too many requests; try again in {seconds} s",
                headers={"Retry-After": str(seconds)},
                retry_delay_ms=wait_ms,
            )

    def _channel(self, target: str) -> client.SignedChannel:
        if target not in self._channels:
            self._channels[target] = client.channel(self.settings, target, identity=IDENTITY)
        return self._channels[target]

    def _callable(self, binding: Binding):
        return self.method(binding.method, self.backends[binding.service_name])

    def method(self, method: MethodDescriptor, target: str):
        """The multi-callable for one RPC on one backend, made once."""
        key = (f"/{method.containing_service.full_name}/{method.name}", target)
        if key not in self._callables:
            channel = self._channel(target)
            request = transcode.message_class(method.input_type)
            reply = transcode.message_class(method.output_type)
            factory = channel.unary_stream if method.server_streaming else channel.unary_unary
            self._callables[key] = factory(
                key[0], request_serializer=request.SerializeToString, response_deserializer=reply.FromString
            )
        return self._callables[key]

    async def call(self, binding: Binding, request, user: User | None):
        token = auth.acting_user.set((user.id, user.roles) if user else None)
        try:
            return await self._callable(binding)(request)
        finally:
            auth.acting_user.reset(token)

    async def call_as_edge(self, method: MethodDescriptor, target: str, request):
        """A unary call made as the edge itself, with no user (webhooks, overlay tokens)."""
        return await auth.as_itself(lambda: self.method(method, target)(request))

    def _renderer(self, binding: Binding) -> Callable:
        """One renderer per binding, so the SSE layer can share each event's JSON between clients."""
        renderer = self._renderers.get(binding.key)
        if renderer is None:
            renderer = self._renderers[binding.key] = functools.partial(transcode.render, binding)
        return renderer

    async def open_stream(self, binding: Binding, request, user: User, headers: dict[str, str]) -> Subscriber:
        return await self.open_call(
            binding.grpc_path,
            self._callable(binding),
            request,
            user,
            self._renderer(binding),
            binding.service_name,
            headers,
            resumable=binding.resumable,
        )

    async def open_call(
        self,
        method: str,
        multi_callable,
        request,
        user: User | None,
        render: Callable,
        service: str,
        headers: dict[str, str],
        resumable: bool,
    ) -> Subscriber:
        """The SSE response for one client of a server-streaming call made for `user` (or as the
        edge itself when None): a seat on an identical feed already open (sse.py says when that is
        safe), or a new call, answered once its first message or failure is known (or a short wait)."""
        if self.streams >= self.max_streams:
            raise EdgeError(grpc.StatusCode.UNAVAILABLE, "TOO_MANY_STREAMS", "this edge holds too many open streams")
        self.streams += 1  # reserved before any await, so a burst cannot overshoot the bound

        def closed() -> None:
            self.streams -= 1

        # Shared only between clients of one verified user. A call the edge makes as itself (an
        # overlay token) is authorized by the token at connect, so each connection makes its own.
        shared = resumable and user is not None
        key = feed_key(method, (user.id, tuple(user.roles)) if user else None, request)
        feed = self.feeds.find(key) if shared else None
        if feed is None:
            token = auth.acting_user.set((user.id, user.roles) if user else None)
            try:
                # The call's interceptor task copies the context now, so it signs for this user.
                deadline = time.monotonic() + self.stream_max_seconds
                call = multi_callable(request, timeout=self.stream_max_seconds)
            except BaseException:
                closed()
                raise
            finally:
                auth.acting_user.reset(token)
            # Indexed at once, before its first message: a storm of identical clients shares it.
            feed = Feed(
                call,
                asyncio.ensure_future(call.read()),
                render,
                service,
                self.keepalive_seconds,
                deadline,
                (lambda message: message.resume_token) if resumable else None,
                self.feeds if shared else None,
                key,
                request,
            )
        subscriber = feed.join(headers, closed, self.draining)
        try:
            # A feed open for a while already passed the backend's checks: no wait for its joiners.
            wait = feed.opened_at + FIRST_EVENT_WAIT_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.wait({feed.first}, timeout=wait)
            failure = feed.first.exception() if feed.first.done() and not feed.first.cancelled() else None
            if failure is not None:
                raise failure
        except BaseException:
            subscriber.abandon()
            raise
        return subscriber

    async def readiness(self) -> dict[str, str]:
        async def check(service: str, target: str) -> str:
            stub = health_pb2_grpc.HealthStub(self._channel(target))
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=READY_TIMEOUT_SECONDS)
            except grpc.aio.AioRpcError as error:
                return error.code().name
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        services = sorted(self.backends)
        statuses = await asyncio.gather(*(check(s, self.backends[s]) for s in services))
        return dict(zip(services, statuses, strict=True))

    async def close(self) -> None:
        channels, self._channels, self._callables = list(self._channels.values()), {}, {}
        for channel in channels:
            await channel.close()
        if self.limiter is not None:
            await self.limiter.close()


def _raw_path(scope) -> str:
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else scope["path"]


class RpcRoute(BaseRoute):
    """Matches a binding's template against the raw (still percent-encoded) path, so an escaped
    '/' inside an id stays part of that id."""

    def __init__(self, binding: Binding, gateway: Gateway, every: list[Binding]):
        self.binding = binding
        self.gateway = gateway
        self.every = every

    def matches(self, scope) -> tuple[Match, dict]:
        if scope["type"] != "http":
            return Match.NONE, {}
        found = self.binding.template.regex.match(_raw_path(scope))
        if found is None:
            return Match.NONE, {}
        child = {"path_params": found.groupdict()}
        return (Match.FULL if scope["method"] == self.binding.http_method else Match.PARTIAL), child

    def url_path_for(self, name: str, /, **path_params):
        # RPC routes have no names; answering "no match" lets the router try its named routes.
        raise NoMatchFound(name, path_params)

    def _allowed(self, path: str) -> str:
        return ", ".join(sorted({b.http_method for b in self.every if b.template.regex.match(path)}))

    async def handle(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        rid = handlers.request_id(request)
        started = time.perf_counter()
        user = None
        try:
            if scope["method"] != self.binding.http_method:
                raise EdgeError(
                    grpc.StatusCode.UNIMPLEMENTED,
                    "METHOD_NOT_ALLOWED",
                    f"{scope['method']} is not allowed here",
                    http_status=405,
                    headers={"Allow": self._allowed(_raw_path(scope))},
                )
            authorization = request.headers.get("authorization")
            if authorization is None:
                # An anonymous visitor: forwarded with no user, and the service decides what is
                # public (the gift catalog, a stream's page); anything else answers 401 below.
                user = None
            else:
                try:
                    user = self.gateway.verifier.verify(authorization)
                except EdgeError:
                    await self.gateway.admit(scope, None)  # bad tokens count against their IP first
                    raise
            await self.gateway.admit(scope, user)
            limit = self.gateway.settings.edge_max_body_bytes
            body = await handlers.json_body(request, limit) if self.binding.body else None
            message = transcode.build_request(
                self.binding, scope["path_params"], request.query_params.multi_items(), body
            )
            if self.binding.streaming:
                transcode.resume_from(self.binding, message, request.headers.get("last-event-id"))
            if self.binding.streaming:
                response = await self.gateway.open_stream(self.binding, message, user, {"x-request-id": rid})
            else:
                reply = await self.gateway.call(self.binding, message, user)
                response = JSONResponse(transcode.render(self.binding, reply))
        except EdgeError as error:
            response = error.response()
        except grpc.aio.AioRpcError as error:
            if user is None and error.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                response = token_missing().response()  # not public: who are you?
            else:
                response = status_response(from_rpc_error(error, self.binding.service_name))
        except Exception:
            log.exception("edge request failed", extra={"route": self.binding.template.text})
            response = internal().response()
        if not isinstance(response, Subscriber):
            response.headers["x-request-id"] = rid
        await response(scope, receive, send)
        status = getattr(response, "status_code", 200)
        binding = self.binding
        handlers.access_log(
            scope["method"], binding.template.text, binding.grpc_path, status, started, user.id if user else None
        )


def default_backends(settings: Settings, bindings: Iterable[Binding]) -> dict[str, str]:
    """Service full name → address, from the package: `fanbank.<svc>.v1` is served by <svc>."""
    backends = {}
    for binding in bindings:
        backend = rules.backend_of(binding.service_name)
        if backend not in settings.addresses:
            raise ConfigError(f"{binding.service_name} has HTTP routes but no address (FANBANK_{backend.upper()}_ADDR)")
        backends[binding.service_name] = settings.addresses[backend]
    return backends


def _target(settings: Settings, backends: dict[str, str], service_full_name: str) -> str:
    """Where a fixed route's service is: as routed, else its package's configured address."""
    return backends.get(service_full_name) or settings.addresses[rules.backend_of(service_full_name)]


def build_app(
    settings: Settings,
    files: list[FileDescriptor] | None = None,
    backends: dict[str, str] | None = None,
    *,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    max_streams: int = MAX_STREAMS,
    stream_max_seconds: float = STREAM_MAX_SECONDS,
    rate_limit_prefix: str = "fanbank:edge:rate",
) -> Starlette:
    """The edge for `files` (default: every compiled Fanbank proto), each service's calls going to
    `backends[service full name]` (default: the configured address of the service's package)."""
    bound = rules.bindings(rules.discover_files() if files is None else files)
    backends = default_backends(settings, bound) if backends is None else backends
    missing = {b.service_name for b in bound} - set(backends)
    if missing:
        raise ConfigError(f"no backend address for {', '.join(sorted(missing))}")
    limiter = None
    if settings.redis_url:
        limiter = RateLimiter(Redis.from_url(settings.redis_url), settings, rate_limit_prefix)
        log.info("rate limits on", extra={"limits": limiter.describe()})
    else:
        log.warning("rate limits off: no FANBANK_REDIS_URL (the edge keeps its buckets in Redis)")
    gateway = Gateway(settings, backends, keepalive_seconds, max_streams, stream_max_seconds, limiter)
    if gateway.verifier.using_dev_secret:
        log.warning("using the built-in development JWT secret (set FANBANK_JWT_SECRET in production)")
    document = openapi.document(bound)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"status": "SERVING"})

    async def readyz(_request: Request) -> Response:
        backends_status = await gateway.readiness()
        serving = not gateway.draining.is_set() and all(s == "SERVING" for s in backends_status.values())
        body = {"status": "SERVING" if serving else "NOT_SERVING", "backends": backends_status}
        return JSONResponse(body, 200 if serving else 503)

    async def openapi_json(_request: Request) -> Response:
        return JSONResponse(document)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        try:
            yield
        finally:
            await gateway.close()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *webhooks.routes(gateway, _target(settings, backends, webhooks.BILLING.full_name)),
        *overlay.routes(gateway, _target(settings, backends, overlay.GIFTS.full_name)),
        *(RpcRoute(b, gateway, bound) for b in bound),
    ]
    middleware = []
    if settings.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.cors_origins),
                allow_methods=sorted({b.http_method for b in bound} | {"GET"}),
                allow_headers=["Authorization", "Content-Type", "X-Request-ID", "Last-Event-ID"],
                expose_headers=["X-Request-ID", "WWW-Authenticate"],
                max_age=600,
            )
        )
    app = Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_exception, Exception: _unhandled},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False
    app.state.gateway = gateway
    app.state.bindings = bound
    return app


async def _http_exception(_request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        return EdgeError(grpc.StatusCode.NOT_FOUND, "ROUTE_NOT_FOUND", "no route matches this path").response()
    if exc.status_code == 405:
        error = EdgeError(
            grpc.StatusCode.UNIMPLEMENTED, "METHOD_NOT_ALLOWED", "method not allowed here", http_status=405
        )
        return error.response()
    log.error("unexpected HTTP exception", extra={"status": exc.status_code})
    return internal().response()


async def _unhandled(_request: Request, _exc: Exception) -> Response:
    return internal().response()
