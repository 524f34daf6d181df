"""shared/legs.py: a fan's payment as the creator's share and the platform fee, each leg left out
when 0, the legs adding up to what the fan pays, and a request built from them."""

import pytest

from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb
from shared.legs import payment_legs


def legs(amount: int, fee: int, grouped: bool = True) -> list[dict]:
    return payment_legs(
        "call:c1:block:3",
        fan_id="fan1",
        creator_id="cr1",
        amount=amount,
        fee=fee,
        code=wpb.TRANSFER_CODE_CALL_BLOCK,
        context_type="call",
        context_id="c1",
        fee_bps=3000,
        grouped=grouped,
    )


def test_share_and_fee_from_the_fans_wallet():
    request = wpb.BatchTransferRequest(mode=wpb.BATCH_MODE_INDEPENDENT, transfers=legs(50, 15))
    creator, fee = request.transfers
    assert (creator.transfer_id, creator.amount, fee.transfer_id, fee.amount) == (
        "call:c1:block:3:creator",
        35,
        "call:c1:block:3:fee",
        15,
    )
    fan = wpb.AccountRef(owner_id="fan1", code=wpb.ACCOUNT_CODE_USER_WALLET, asset=wpb.ASSET_TOKEN)
    assert creator.debit == fan and fee.debit == fan
    assert creator.credit == wpb.AccountRef(
        owner_id="cr1", code=wpb.ACCOUNT_CODE_CREATOR_EARNINGS, asset=wpb.ASSET_TOKEN
    )
    assert fee.credit == wpb.AccountRef(owner_id="", code=wpb.ACCOUNT_CODE_PLATFORM_REVENUE, asset=wpb.ASSET_TOKEN)
    for spec in request.transfers:
        assert (spec.group_id, spec.counterparty_id, spec.context_type, spec.context_id, spec.fee_bps) == (
            "call:c1:block:3",
            "cr1",
            "call",
            "c1",
            3000,
        )


def test_a_leg_of_zero_is_left_out_and_ungrouped_legs_carry_no_group():
    assert [leg["transfer_id"] for leg in legs(50, 0)] == ["call:c1:block:3:creator"]
    assert [(leg["transfer_id"], leg["amount"]) for leg in legs(50, 50)] == [("call:c1:block:3:fee", 50)]
    assert all("group_id" not in leg for leg in legs(50, 15, grouped=False))


@pytest.mark.parametrize(("amount", "fee"), [(0, 0), (-5, 0), (50, 51), (50, -1)])
def test_a_fee_outside_the_amount_is_a_bug(amount, fee):
    with pytest.raises(AssertionError):
        legs(amount, fee)
