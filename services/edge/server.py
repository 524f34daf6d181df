"""Hosting the edge: uvicorn in this process's loop, with graceful shutdown on SIGTERM.

On SIGTERM the edge stops accepting connections, tells open SSE streams to end (their clients
reconnect to another replica), lets in-flight requests finish for FANBANK_SHUTDOWN_GRACE_SECONDS,
then closes its backend channels. uvicorn's own signal capture re-raises the signal after
shutdown, which would make a clean stop exit with 143; the loop's handlers are used instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

import uvicorn

from services.edge.app import build_app
from shared.config import Settings

log = logging.getLogger(__name__)

# Open connections (SSE streams included) one edge process accepts before answering 503.
MAX_CONNECTIONS = 20_000
KEEP_ALIVE_SECONDS = 5


class EdgeServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, handle_signals: bool = True):
        super().__init__(config)
        self.handle_signals = handle_signals

    @contextlib.contextmanager
    def capture_signals(self):
        if not self.handle_signals:
            yield
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.drain)
        try:
            yield
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def drain(self) -> None:
        log.info("shutting down")
        self.config.app.state.gateway.draining.set()
        self.should_exit = True

    @property
    def port(self) -> int:
        return self.servers[0].sockets[0].getsockname()[1]


def make_server(settings: Settings, app, port: int | None = None, handle_signals: bool = True) -> EdgeServer:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.ports["edge"] if port is None else port,
        lifespan="on",
        # httptools (C) parses and frames HTTP/1.1; uvicorn's pure-Python h11 was ~15% of the edge's
        # CPU per REST tip. Named, not "auto", so a missing wheel fails at start instead of slowing.
        http="httptools",
        log_config=None,
        access_log=False,
        server_header=False,
        # X-Forwarded-For is believed only from the configured proxies (uvicorn then takes the
        # right-most address they did not add); with none, a client could name any IP it likes.
        proxy_headers=bool(settings.edge_trusted_proxies),
        forwarded_allow_ips=list(settings.edge_trusted_proxies) or None,
        limit_concurrency=MAX_CONNECTIONS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    # The edge writes its own access line, naming the route's template: uvicorn's would carry the raw
    # path, and an overlay path is a creator's secret.
    logging.getLogger("uvicorn.access").disabled = True
    return EdgeServer(config, handle_signals)


def listening_socket(host: str, port: int = 0) -> socket.socket:
    """Bound and listening before uvicorn starts, so the port is known up front and early
    connections wait in the backlog instead of being refused."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


async def serve(settings: Settings, port: int | None = None) -> None:
    server = make_server(settings, build_app(settings), port)
    log.info("serving", extra={"port": server.config.port})
    await server.serve()
