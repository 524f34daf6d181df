"""A fan's payment to a creator as Wallet transfer legs — what a tip, a gift, a ticket and a call
block all are (PRODUCT.md "Money flows"): the creator's share, `<group>:creator`, to their earnings,
and the platform's fee, `<group>:fee`, to platform revenue, both from the fan's wallet; a leg of 0
is left out. Services derive `group` from what they are paying for, so a retry never pays twice.

The legs are answered as dicts of `TransferSpec` fields: a request made from them
(`BatchTransferRequest(transfers=[...])`) is built in one constructor call, where messages passed
in would each be copied (the metering tick makes 100,000 of them).
"""

from __future__ import annotations

from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb


def payment_legs(
    group: str,
    *,
    fan_id: str,
    creator_id: str,
    amount: int,
    fee: int,
    code: int,
    context_type: str,
    context_id: str,
    fee_bps: int,
    grouped: bool,
) -> list[dict]:
    """The legs of `amount` tokens from `fan_id`, `fee` of them to the platform. `grouped`: the legs
    carry `group` as their group_id (one linked unit inside an INDEPENDENT batch); otherwise the
    caller sends them as a LINKED batch of their own."""
    assert 0 < amount and 0 <= fee <= amount, "the fee is a part of the amount"
    fan = {"owner_id": fan_id, "code": wpb.ACCOUNT_CODE_USER_WALLET, "asset": wpb.ASSET_TOKEN}
    common = {
        "code": code,
        "context_type": context_type,
        "context_id": context_id,
        "counterparty_id": creator_id,
        "fee_bps": fee_bps,
    }
    if grouped:
        common["group_id"] = group
    legs = []
    if amount > fee:
        creator = {"owner_id": creator_id, "code": wpb.ACCOUNT_CODE_CREATOR_EARNINGS, "asset": wpb.ASSET_TOKEN}
        legs.append(
            {"transfer_id": f"{group}:creator", "debit": fan, "credit": creator, "amount": amount - fee, **common}
        )
    if fee > 0:
        platform = {"owner_id": "", "code": wpb.ACCOUNT_CODE_PLATFORM_REVENUE, "asset": wpb.ASSET_TOKEN}
        legs.append({"transfer_id": f"{group}:fee", "debit": fan, "credit": platform, "amount": fee, **common})
    return legs
