"""Helpers shared by the integration tests: settings for a test database, in-process services,
signed stubs, and ErrorInfo extraction."""

from __future__ import annotations

import dataclasses
import os
import socket
import uuid
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
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
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


def uid(prefix: str) -> str:
    """A fresh id for this test run (test modules share Redis, which outlives their databases)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def fund(wallet, owner: str, amount: int) -> None:
    """Buys `amount` tokens for `owner` (provider clearing → their purchased account)."""
    await wallet.Transfer(
        wpb.TransferRequest(
            transfer=wpb.TransferSpec(
                transfer_id=uid("buy"),
                debit=wpb.AccountRef(owner_id="", code=wpb.ACCOUNT_CODE_PROVIDER_CLEARING, asset=wpb.ASSET_TOKEN),
                credit=wpb.AccountRef(owner_id=owner, code=wpb.ACCOUNT_CODE_USER_PURCHASED, asset=wpb.ASSET_TOKEN),
                amount=amount,
                code=wpb.TRANSFER_CODE_PURCHASE,
            )
        )
    )


async def spendable(wallet, owner: str) -> int:
    return (await wallet.GetBalance(wpb.GetBalanceRequest(owner_id=owner))).spendable_available


async def earned(wallet, owner: str) -> int:
    """What `owner` holds as creator earnings."""
    balance = await wallet.GetBalance(wpb.GetBalanceRequest(owner_id=owner))
    return sum(a.posted for a in balance.accounts if a.ref.code == wpb.ACCOUNT_CODE_CREATOR_EARNINGS)
