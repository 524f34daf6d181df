import asyncio

import grpc
import pytest

from services.wallet.ledger import balance_hash, balances_named, notify_payloads
from services.wallet.server import BalanceWatchers
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from tests.harness import Caller, migrated_engine, reason_of, running, settings_for


def ref(owner, code, asset=pb.ASSET_TOKEN):
    return pb.AccountRef(owner_id=owner, code=code, asset=asset)


@pytest.fixture(scope="module")
async def wallet(database_url):
    settings = settings_for(database_url)
    engine = await migrated_engine(settings)
    async with running("wallet", settings, engine) as (target, service):
        caller = Caller(settings, target)
        yield caller, service
        await caller.close()
    await engine.dispose()


async def test_tip_promotional_first(wallet):
    caller, _ = wallet
    w = caller.wallet
    await w.GrantPromotion(pb.GrantPromotionRequest(request_id="g1", owner_id="fan1", amount=30))
    await w.Transfer(
        pb.TransferRequest(
            transfer=pb.TransferSpec(
                transfer_id="buy1",
                debit=ref("", pb.ACCOUNT_CODE_PROVIDER_CLEARING),
                credit=ref("fan1", pb.ACCOUNT_CODE_USER_PURCHASED),
                amount=100,
                code=pb.TRANSFER_CODE_PURCHASE,
            )
        )
    )
    tip = pb.TransferSpec(
        transfer_id="tip1",
        debit=ref("fan1", pb.ACCOUNT_CODE_USER_WALLET),
        credit=ref("c1", pb.ACCOUNT_CODE_CREATOR_EARNINGS),
        amount=50,
        code=pb.TRANSFER_CODE_TIP,
    )
    r = await w.Transfer(pb.TransferRequest(transfer=tip))
    assert [(p.amount, p.funding) for p in r.transfer.postings] == [
        (30, pb.FUNDING_PROMOTIONAL),
        (20, pb.FUNDING_PURCHASED),
    ]
    again = await w.Transfer(pb.TransferRequest(transfer=tip))
    assert again == r
    bal = await w.GetBalance(pb.GetBalanceRequest(owner_id="fan1"))
    assert bal.spendable_available == 80
    tip.amount = 51
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await w.Transfer(pb.TransferRequest(transfer=tip))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS and reason_of(e.value) == "ID_REUSED_AMOUNT"
    audit = await w.Audit(pb.AuditRequest())
    assert audit.ok, audit


async def test_independent_batch_with_linked_groups(wallet):
    """A call block and its fee commit together; one fan's empty wallet fails only its own group."""
    caller, _ = wallet
    w = caller.wallet
    for fan, amount in (("gfan1", 100), ("gfan2", 40)):
        await w.Transfer(
            pb.TransferRequest(
                transfer=pb.TransferSpec(
                    transfer_id=f"fund-{fan}",
                    debit=ref("", pb.ACCOUNT_CODE_PROVIDER_CLEARING),
                    credit=ref(fan, pb.ACCOUNT_CODE_USER_PURCHASED),
                    amount=amount,
                    code=pb.TRANSFER_CODE_PURCHASE,
                )
            )
        )

    def block(fan, creator_share, fee):
        group = f"call-{fan}-block-1"
        return [
            pb.TransferSpec(
                transfer_id=f"{group}-creator",
                group_id=group,
                debit=ref(fan, pb.ACCOUNT_CODE_USER_WALLET),
                credit=ref("gcreator", pb.ACCOUNT_CODE_CREATOR_EARNINGS),
                amount=creator_share,
                code=pb.TRANSFER_CODE_CALL_BLOCK,
                fee_bps=3000,
            ),
            pb.TransferSpec(
                transfer_id=f"{group}-fee",
                group_id=group,
                debit=ref(fan, pb.ACCOUNT_CODE_USER_WALLET),
                credit=ref("", pb.ACCOUNT_CODE_PLATFORM_REVENUE),
                amount=fee,
                code=pb.TRANSFER_CODE_CALL_BLOCK,
                fee_bps=3000,
            ),
        ]

    request = pb.BatchTransferRequest(
        batch_id="tick-1", mode=pb.BATCH_MODE_INDEPENDENT, transfers=block("gfan1", 35, 15) + block("gfan2", 35, 15)
    )
    first = await w.BatchTransfer(request)
    assert [r.HasField("transfer") for r in first.results] == [True, True, False, False]
    assert reason_of_status(first.results[2].error) == "INSUFFICIENT_FUNDS"
    assert await w.BatchTransfer(request) == first
    fan2 = await w.GetBalance(pb.GetBalanceRequest(owner_id="gfan2"))
    assert fan2.spendable_posted == 40  # the creator leg (35) was affordable alone, but not with its fee
    creator = await w.GetBalance(pb.GetBalanceRequest(owner_id="gcreator"))
    assert creator.accounts[0].posted == 35

    # The same groups with their items interleaved, a standalone item between them, and replayed:
    # every result stays at its item's place, whatever order the groups' items come in.
    def replayed(specs):
        return [pb.TransferSpec(transfer_id=f"{s.transfer_id}-again", group_id=f"{s.group_id}-again",
                                debit=s.debit, credit=s.credit, amount=s.amount, code=s.code, fee_bps=s.fee_bps)
                for s in specs]  # fmt: skip

    g1, g2 = replayed(block("gfan1", 5, 2)), replayed(block("gfan2", 35, 15))
    alone = pb.TransferSpec(
        transfer_id="alone-again",
        debit=ref("gfan1", pb.ACCOUNT_CODE_USER_WALLET),
        credit=ref("gcreator", pb.ACCOUNT_CODE_CREATOR_EARNINGS),
        amount=1,
        code=pb.TRANSFER_CODE_TIP,
    )
    mixed = pb.BatchTransferRequest(mode=pb.BATCH_MODE_INDEPENDENT, transfers=[g1[0], g2[0], alone, g2[1], g1[1]])
    second = await w.BatchTransfer(mixed)
    assert [r.transfer_id for r in second.results] == [s.transfer_id for s in mixed.transfers]
    assert [r.transfer.amount if r.HasField("transfer") else None for r in second.results] == [5, None, 1, None, 2]
    assert await w.BatchTransfer(mixed) == second
    assert (await w.Audit(pb.AuditRequest())).ok


def reason_of_status(status) -> str:
    from shared.errors import error_info

    return error_info(status).reason


async def test_linked_batch_may_spend_what_it_just_credited(wallet):
    """A purchase and a tip in one linked batch: the fan's account is created by the first item."""
    caller, _ = wallet
    request = pb.BatchTransferRequest(
        batch_id="buy-and-tip",
        mode=pb.BATCH_MODE_LINKED,
        transfers=[
            pb.TransferSpec(transfer_id="buy", debit=ref("", pb.ACCOUNT_CODE_PROVIDER_CLEARING),
                            credit=ref("newfan", pb.ACCOUNT_CODE_USER_PURCHASED), amount=20,
                            code=pb.TRANSFER_CODE_PURCHASE),
            pb.TransferSpec(transfer_id="tip", debit=ref("newfan", pb.ACCOUNT_CODE_USER_WALLET),
                            credit=ref("newcreator", pb.ACCOUNT_CODE_CREATOR_EARNINGS), amount=15,
                            code=pb.TRANSFER_CODE_TIP),
        ],
    )  # fmt: skip
    response = await caller.wallet.BatchTransfer(request)
    assert [r.transfer.amount for r in response.results] == [20, 15]
    balance = await caller.wallet.GetBalance(pb.GetBalanceRequest(owner_id="newfan"))
    assert balance.spendable_posted == 5
    assert (await caller.wallet.Audit(pb.AuditRequest())).ok


def test_balance_notifications_name_every_balance_within_notifys_limit():
    touched = {(f"fan-with-a-longish-id-{i}", "TOKEN") for i in range(3000)} | {("", "TOKEN")}
    payloads = notify_payloads(touched)
    assert len(payloads) == 3
    assert all(len(p.encode()) < 8000 for p in payloads)  # PostgreSQL refuses 8,000 bytes and more
    named = [key for p in payloads for key in balances_named(p)]
    assert sorted(named) == sorted(balance_hash(o, a) for o, a in touched)
    with pytest.raises(ValueError):
        balances_named('"*"')


async def test_a_large_batch_wakes_the_watchers_of_its_balances_and_no_others(wallet, database_url):
    """A batch of 600 fundings (two ledger batches, each touching far more accounts than one
    notification holds) wakes the watchers of the balances it changed and leaves the others asleep."""
    caller, _ = wallet
    watchers = BalanceWatchers(settings_for(database_url).database_url)
    try:
        funded = await watchers.subscribe("bulk-fan-599", "TOKEN")
        bystander = await watchers.subscribe("bulk-bystander", "TOKEN")
        sentinel = await watchers.subscribe("bulk-sentinel", "TOKEN")
        for event in (funded, bystander, sentinel):
            event.clear()

        def funding(transfer_id: str, owner: str) -> pb.TransferSpec:
            return pb.TransferSpec(
                transfer_id=transfer_id,
                debit=ref("", pb.ACCOUNT_CODE_PROVIDER_CLEARING),
                credit=ref(owner, pb.ACCOUNT_CODE_USER_PURCHASED),
                amount=10,
                code=pb.TRANSFER_CODE_PURCHASE,
            )

        items = [funding(f"bulk-{i}", f"bulk-fan-{i}") for i in range(600)]
        reply = await caller.wallet.BatchTransfer(
            pb.BatchTransferRequest(mode=pb.BATCH_MODE_INDEPENDENT, transfers=items)
        )
        assert not any(r.HasField("error") for r in reply.results)
        await asyncio.wait_for(funded.wait(), 10)
        # Notifications arrive in commit order on the one LISTEN connection: once a later
        # transfer's has woken the sentinel, the batch's have all been handled.
        await caller.wallet.Transfer(pb.TransferRequest(transfer=funding("bulk-sentinel-1", "bulk-sentinel")))
        await asyncio.wait_for(sentinel.wait(), 10)
        assert not bystander.is_set()
    finally:
        await watchers.close()
