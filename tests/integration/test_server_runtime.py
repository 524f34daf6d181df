"""The gRPC runtime's accept loops (shared/server.py): several servers on one port with SO_REUSEPORT,
each taking its share of the connections, and a port another process serves still refused."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import psutil
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.server import start_server
from tests.harness import free_port, settings_for


def _listeners(port: int) -> int:
    return sum(1 for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port)


async def _serving(target: str) -> bool:
    # A local subchannel pool: each channel its own connection, as separate clients have.
    async with grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        return reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_accept_loops_listen_together_and_serve_every_connection(database_url):
    settings = dataclasses.replace(settings_for(database_url), grpc_accept_loops=4)
    runtime = await start_server(settings, [], port=0, host="127.0.0.1")
    try:
        assert len(runtime.servers) == 4
        assert _listeners(runtime.port) == 4
        answers = await asyncio.gather(*(_serving(f"127.0.0.1:{runtime.port}") for _ in range(16)))
        assert all(answers)
    finally:
        await runtime.stop()
    assert _listeners(runtime.port) == 0


@pytest.mark.parametrize("loops", [1, 4])
async def test_a_port_already_served_is_refused(database_url, loops):
    settings = settings_for(database_url)
    port = free_port()
    first = await start_server(dataclasses.replace(settings, grpc_accept_loops=4), [], port=port, host="127.0.0.1")
    try:
        with pytest.raises(RuntimeError, match="bind"):  # ours, or gRPC's own for one loop
            await start_server(dataclasses.replace(settings, grpc_accept_loops=loops), [], port=port, host="127.0.0.1")
        assert await _serving(f"127.0.0.1:{port}")
    finally:
        await first.stop()
    again = await start_server(dataclasses.replace(settings, grpc_accept_loops=loops), [], port=port, host="127.0.0.1")
    await again.stop()
