"""The gRPC runtime every service runs on: `grpc.aio` servers with health, reflection, the wrapper
(`Instrument`, applied to each servicer method at registration) that authenticates, tags and logs
each call and maps domain errors to `google.rpc.Status`, and graceful shutdown (NOT_SERVING →
drain → stop).

Accept loops. A `grpc.aio` server takes new calls from its core one at a time: one call accepted,
one turn of the event loop, the next. Under load the calls wait in the core for that loop, not for
the service (on `fanbank bench tips`, 130 of a tip's 250 ms before its handler started). So a
process serves its port with `FANBANK_GRPC_ACCEPT_LOOPS` servers, all on one event loop, sharing
the servicers, bound with SO_REUSEPORT: the kernel spreads connections over them, so a client
that opens several connections (the edge's workers, other services' replicas, a load generator) is
accepted by several loops at once. SO_REUSEPORT would also let a second process bind the same port
silently; a plain bind of the port first (no SO_REUSEPORT) keeps "port in use" an error.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
import types
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from grpc_status import rpc_status

from shared import auth, logs
from shared.config import Settings
from shared.errors import DomainError

log = logging.getLogger(__name__)

# At shutdown, the servers stop once no unary call has run for this long (see Runtime.stop).
QUIET_SECONDS = 0.2

# Bounds on what one connection may send; requests larger than this are refused by gRPC itself.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def _internal_status(message: str):
    error = DomainError(grpc.StatusCode.INTERNAL, "INTERNAL", message)
    return rpc_status.to_status(error.to_status())


class Instrument:
    """Request id, caller authentication, JSON access log and error mapping for every RPC.

    Applied once, when a service is registered, by wrapping each servicer method — not as a
    grpc.aio server interceptor, which builds a new method handler on every call and measurably
    slowed the Wallet's hot path. Health and reflection are registered unwrapped (open to probes).
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        # For the drain at shutdown (Runtime.stop): unary calls running, and when the last began.
        self.unary_in_flight = 0
        self.last_started = 0.0

    def wrap(self, servicer: object, full_name: str) -> object:
        """A stand-in for `servicer` whose every RPC method goes through the runtime's checks."""
        service = descriptor_pool.Default().FindServiceByName(full_name)
        wrapped = types.SimpleNamespace()
        for method in service.methods:
            assert not method.client_streaming, f"{method.full_name}: Fanbank has no client streaming"
            path = f"/{full_name}/{method.name}"
            behavior = getattr(servicer, method.name)
            wrapper = self._wrap_stream if method.server_streaming else self._wrap_unary
            setattr(wrapped, method.name, wrapper(path, behavior))
        return wrapped

    def _begin(self, method: str, context) -> None:
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        logs.request_id.set(metadata.get("x-request-id") or uuid.uuid4().hex)
        auth.current_principal.set(auth.verify(self.settings, metadata, method))

    def _finish(self, method: str, started: float, code: grpc.StatusCode, reason: str = "") -> None:
        principal = auth.current_principal.get(None)
        level = logging.DEBUG if code == grpc.StatusCode.OK else logging.INFO
        if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            level = logging.ERROR
        if log.isEnabledFor(level):
            log.log(
                level,
                "rpc",
                extra={
                    "method": method,
                    "code": code.name,
                    "reason": reason,
                    "ms": round((time.perf_counter() - started) * 1000, 3),
                    "caller": principal.caller if principal else None,
                    "user": principal.user if principal else None,
                },
            )

    def _wrap_unary(self, method: str, behavior: Callable[..., Awaitable]):
        async def wrapper(request, context):
            started = self.last_started = time.perf_counter()
            self.unary_in_flight += 1
            try:
                self._begin(method, context)
                response = await behavior(request, context)
            except DomainError as error:
                self._finish(method, started, error.code, error.reason)
                await context.abort_with_status(rpc_status.to_status(error.to_status()))
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("unhandled error", extra={"method": method})
                self._finish(method, started, grpc.StatusCode.INTERNAL, "INTERNAL")
                await context.abort_with_status(_internal_status("internal error"))
            finally:
                self.unary_in_flight -= 1
            self._finish(method, started, grpc.StatusCode.OK)
            return response

        return wrapper

    def _wrap_stream(self, method: str, behavior: Callable):
        async def wrapper(request, context):
            started = time.perf_counter()
            try:
                self._begin(method, context)
                async for item in behavior(request, context):
                    yield item
            except DomainError as error:
                self._finish(method, started, error.code, error.reason)
                await context.abort_with_status(rpc_status.to_status(error.to_status()))
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("unhandled error", extra={"method": method})
                self._finish(method, started, grpc.StatusCode.INTERNAL, "INTERNAL")
                await context.abort_with_status(_internal_status("internal error"))
            self._finish(method, started, grpc.StatusCode.OK)

        return wrapper


@dataclass
class Registration:
    """One gRPC service to host: its full name (for health and reflection), its servicer, and the
    generated function that adds a servicer to a server."""

    full_name: str
    servicer: object
    add: Callable[[object, grpc.aio.Server], None]


@dataclass
class Runtime:
    servers: list[grpc.aio.Server]
    health: HealthServicer
    port: int
    names: list[str]
    grace_seconds: int
    instrument: Instrument
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _stopped: bool = False

    async def stop(self) -> None:
        """NOT_SERVING first so load balancers and probes move away, then drain, then stop.

        The drain keeps serving until no unary call has run for QUIET_SECONDS (at most half the
        grace), and only then stops the servers, which give what still runs the rest of the grace.
        A grpc.aio server picks up arriving calls one per event-loop turn; calls that had arrived
        but were not picked up yet when it stopped were cancelled (CANCELLED: the client cannot tell
        whether anything happened), so stopping at once cancelled part of a burst in flight."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        began = time.perf_counter()
        drain_until = began + self.grace_seconds / 2
        while time.perf_counter() < drain_until:
            now = time.perf_counter()
            if self.instrument.unary_in_flight == 0 and now - self.instrument.last_started >= QUIET_SECONDS:
                break
            await asyncio.sleep(QUIET_SECONDS / 10)
        remaining = max(0.0, self.grace_seconds - (time.perf_counter() - began))
        await asyncio.gather(*(server.stop(remaining) for server in self.servers))
        for hook in self.on_stop:
            await hook()

    async def wait(self) -> None:
        await asyncio.gather(*(server.wait_for_termination() for server in self.servers))


def _check_port_free(host: str, port: int) -> None:
    """Raises if something listens on host:port already: the accept loops bind with SO_REUSEPORT,
    which a plain bind refuses to share, so another process serving this port is caught here."""
    if port == 0:
        return
    name = host.strip("[]")
    for family, kind, proto, _, address in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM):
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is fine
            try:
                probe.bind(address)
            except OSError as error:
                raise RuntimeError(f"could not bind {host}:{port}: {error.strerror}") from None


async def start_server(
    settings: Settings,
    registrations: Iterable[Registration],
    port: int,
    host: str | None = None,
    extra_options: Iterable[tuple[str, object]] = (),
) -> Runtime:
    """Builds and starts the servers (see "Accept loops"); answers the runtime with the bound port
    (port 0 picks one)."""
    host = host or settings.host
    loops = settings.grpc_accept_loops
    options = [
        ("grpc.so_reuseport", 1 if loops > 1 else 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.server.max_pending_requests", settings.grpc_max_pending_requests),
        *extra_options,
    ]
    registrations = list(registrations)
    instrument = Instrument(settings)
    wrapped = [
        (registration, instrument.wrap(registration.servicer, registration.full_name)) for registration in registrations
    ]
    health = HealthServicer()
    names = [r.full_name for r in registrations]
    reflected = [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
    if loops > 1:
        _check_port_free(host, port)
    servers: list[grpc.aio.Server] = []
    bound = port
    for _ in range(loops):
        server = grpc.aio.server(options=options, maximum_concurrent_rpcs=settings.grpc_max_concurrent_rpcs)
        for registration, servicer in wrapped:
            registration.add(servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(reflected, server)
        got = server.add_insecure_port(f"{host}:{bound}")
        if got == 0 or (bound and got != bound):
            raise RuntimeError(f"could not bind {host}:{bound}")
        bound = got
        servers.append(server)
    for server in servers:
        await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    for name in names:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return Runtime(servers, health, bound, names, settings.shutdown_grace_seconds, instrument)


async def run_until_signalled(runtimes: list[Runtime]) -> None:
    """Serves until SIGTERM or SIGINT, then shuts every runtime down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await asyncio.gather(*(runtime.stop() for runtime in runtimes))
