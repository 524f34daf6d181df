"""The benchmarks' minimal HTTP/2 client (shared/h2client.py) against a real gRPC server: a unary
call answers the reply's bytes, a call the server refuses (trailers only) fails, and many calls over
a few connections each get their own answer."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest
from grpc_health.v1 import health_pb2

from shared import h2client
from shared.server import start_server
from tests.harness import settings_for

CHECK = "/grpc.health.v1.Health/Check"


@pytest.fixture
async def target(database_url):
    runtime = await start_server(
        dataclasses.replace(settings_for(database_url), grpc_accept_loops=2), [], port=0, host="127.0.0.1"
    )
    yield f"127.0.0.1:{runtime.port}"
    await runtime.stop()


async def test_unary_calls_answer_their_replies_and_refusals_fail(target):
    caller = h2client.UnaryCaller()
    await caller.open(target, 3, timeout_seconds=10)
    try:
        headers = h2client.header_block(CHECK, target, timeout_seconds=10)
        ok = health_pb2.HealthCheckRequest().SerializeToString()
        unknown = health_pb2.HealthCheckRequest(service="no.such.Service").SerializeToString()
        replies = await asyncio.gather(*(caller.call(i, headers, ok) for i in range(50)))
        assert {health_pb2.HealthCheckResponse.FromString(r).status for r in replies} == {
            health_pb2.HealthCheckResponse.SERVING
        }
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await caller.call(0, headers, unknown)  # NOT_FOUND: a trailers-only answer
        assert refused.value.code() == grpc.StatusCode.UNKNOWN
        assert "ENDED" in refused.value.details()
    finally:
        caller.close()
