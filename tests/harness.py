"""Helpers shared by the integration tests: settings for a test database, in-process services,
signed stubs, and ErrorInfo extraction."""

from __future__ import annotations

import dataclasses
import os
import socket
from contextlib import asynccontextmanager

import grpc
from grpc_status import rpc_status

from shared import auth, client
from shared.config import Settings, load_settings
from shared.db import make_engine, migrate
from shared.errors import error_info
from shared.gen.fanbank.billing.v1 import billing_service_pb2_grpc as billing_grpc
from shared.gen.fanbank.gifts.v1 import gifts_service_pb2_grpc as gifts_grpc
from shared.gen.fanbank.streams.v1 import streams_service_pb2_grpc as streams_grpc
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as wallet_grpc
from shared.host import host


def settings_for(database_url: str, redis_url: str | None = None, **overrides) -> Settings:
    os.environ.setdefault("FANBANK_CLOCK", "controlled")
    base = load_settings()
    return dataclasses.replace(
        base, database_url=database_url, redis_url=redis_url, clock_mode="controlled", **overrides
    )


async def migrated_engine(settings: Settings, pool_size: int = 4):
    engine = make_engine(settings.database_url, pool_size)
    await migrate(engine)
    return engine


@asynccontextmanager
async def running(name: str, settings: Settings, engine=None):
    """Hosts service `name` in this process on a free port; answers (target, service)."""
    runtime, service = await host(name, settings, port=0, engine=engine)
    try:
        yield f"127.0.0.1:{runtime.port}", service
    finally:
        await runtime.stop()


class Caller:
    """Signed stubs for one identity, optionally acting for a user with roles."""

    def __init__(self, settings: Settings, target: str, identity: str = "platform"):
        self.channel = client.channel(settings, target, identity=identity)
        self.wallet = wallet_grpc.WalletServiceStub(self.channel)
        self.billing = billing_grpc.BillingServiceStub(self.channel)
        self.gifts = gifts_grpc.GiftsServiceStub(self.channel)
        self.streams = streams_grpc.StreamsServiceStub(self.channel)

    async def close(self):
        await self.channel.close()


@asynccontextmanager
async def as_user(user: str, *roles: str):
    token = auth.acting_user.set((user, tuple(roles)))
    try:
        yield
    finally:
        auth.acting_user.reset(token)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    info = error_info(status) if status else None
    return info.reason if info else ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
