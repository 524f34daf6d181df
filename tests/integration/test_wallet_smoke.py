import grpc
import pytest

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
