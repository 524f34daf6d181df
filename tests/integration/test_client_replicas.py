"""A service address naming several replicas: shared/client.py spreads the calls over all of them
(round robin), and keeps calling the others when one goes away."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from shared import client
from tests.harness import settings_for


class _Counting(health.aio.HealthServicer):
    def __init__(self):
        super().__init__()
        self.calls = 0

    async def Check(self, request, context):
        self.calls += 1
        return await super().Check(request, context)


async def _replica() -> tuple[grpc.aio.Server, _Counting, int]:
    server = grpc.aio.server()
    servicer = _Counting()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, servicer, port


async def test_calls_are_spread_over_every_replica_of_an_address(database_url):
    replicas = [await _replica() for _ in range(3)]
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for _, _, port in replicas)
    channel = client.channel(settings_for(database_url), target, identity="billing")
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(30):
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        counts = [servicer.calls for _, servicer, _ in replicas]
        assert sum(counts) == 30
        assert all(count >= 5 for count in counts), counts  # round robin: 10 each once all are connected

        # One replica gone: the others keep answering every call (UNAVAILABLE is retried elsewhere).
        await replicas[0][0].stop(grace=None)
        for _ in range(10):
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close()
        for server, _, _ in replicas:
            await server.stop(grace=None)
