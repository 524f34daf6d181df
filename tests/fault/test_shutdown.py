"""SIGTERM on a Wallet process: health turns NOT_SERVING, in-flight calls finish, the process exits 0."""

import asyncio
import os
import signal
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from shared.client import health_status
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from tests.harness import Caller, free_port, migrated_engine, settings_for


async def _wait_serving(target: str) -> None:
    for _ in range(300):
        if await health_status(target) == "SERVING":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{target} never became healthy")


async def test_sigterm_drains_and_exits_cleanly(database_url):
    settings = settings_for(database_url)
    engine = await migrated_engine(settings)
    await engine.dispose()
    port = free_port()
    env = dict(os.environ, FANBANK_DATABASE_URL=database_url, FANBANK_LOG_LEVEL="WARNING",
               FANBANK_SHUTDOWN_GRACE_SECONDS="5", FANBANK_CLOCK="controlled")  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "shared.cli", "serve", "wallet", "--port", str(port), env=env
    )
    target = f"127.0.0.1:{port}"
    try:
        await _wait_serving(target)
        caller = Caller(settings, target)
        async with grpc.aio.insecure_channel(target) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service="fanbank.wallet.v1.WalletService"))
            first = await watch.read()
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            # Calls in flight when SIGTERM arrives must still be answered.
            grants = [
                asyncio.ensure_future(
                    caller.wallet.GrantPromotion(pb.GrantPromotionRequest(request_id=f"g{i}", owner_id="fan", amount=1))
                )
                for i in range(50)
            ]
            # Signalled once the first is answered, so every other one has reached the server. The
            # server picks up arriving calls one per event-loop turn, and stopping at once used to
            # cancel those not picked up yet (CANCELLED: 14 to 38 of the 50); the drain serves them.
            await asyncio.wait(grants, return_when=asyncio.FIRST_COMPLETED)
            process.send_signal(signal.SIGTERM)
            answered = await asyncio.gather(*grants, return_exceptions=True)
            second = await asyncio.wait_for(watch.read(), 10)
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
        ok = [a for a in answered if isinstance(a, pb.GrantPromotionResponse)]
        refused = [a for a in answered if isinstance(a, grpc.aio.AioRpcError)]
        assert refused == [] and len(ok) == 50
        assert await asyncio.wait_for(process.wait(), 20) == 0
        await caller.close()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
