"""Audit finds what it is for: each kind of broken ledger is written into the tables by hand (this
module's own database) and Audit must name it. The write path leaves some references unchecked by
the database (Wallet migrations 0002 and 0005); Audit is what would catch a bug there."""

import pytest
from sqlalchemy import text

from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from tests.harness import Caller, fund, migrated_engine, running, settings_for


@pytest.fixture(scope="module")
async def env(database_url):
    settings = settings_for(database_url)
    engine = await migrated_engine(settings)
    async with running("wallet", settings, engine) as (target, _service):
        caller = Caller(settings, target)
        yield caller.wallet, engine
        await caller.close()
    await engine.dispose()


async def kinds(wallet) -> dict[str, list[str]]:
    audit = await wallet.Audit(pb.AuditRequest())
    found: dict[str, list[str]] = {}
    for violation in audit.violations:
        found.setdefault(violation.kind, []).append(violation.detail)
    assert audit.ok == (not found)
    return found


async def test_audit_names_each_broken_invariant(env):
    wallet, engine = env
    await fund(wallet, "audit-fan", 100)
    tip = pb.TransferSpec(
        transfer_id="audit-tip",
        debit=pb.AccountRef(owner_id="audit-fan", code=pb.ACCOUNT_CODE_USER_WALLET, asset=pb.ASSET_TOKEN),
        credit=pb.AccountRef(owner_id="audit-creator", code=pb.ACCOUNT_CODE_CREATOR_EARNINGS, asset=pb.ASSET_TOKEN),
        amount=30,
        code=pb.TRANSFER_CODE_TIP,
    )
    posted = (await wallet.Transfer(pb.TransferRequest(transfer=tip))).transfer
    assert posted.amount == 30
    assert await kinds(wallet) == {}

    async with engine.begin() as conn:
        transfer = (
            await conn.execute(
                text(
                    "SELECT id, operation_id, debit_account_id, credit_account_id FROM wallet.transfers"
                    " WHERE item_id = 'audit-tip'"
                )
            )
        ).one()
        # A posting naming an account that does not exist, with its two entries (so it balances).
        ghost = (
            await conn.execute(
                text(
                    "INSERT INTO wallet.transfers (id, operation_id, leg, item_id, funding, code, asset,"
                    " debit_account_id, credit_account_id, amount, context_type, context_id, counterparty_id,"
                    " fee_bps, created_at) VALUES (nextval('wallet.transfer_ids'), :op, 0, 'ghost', 'NONE', 'TIP',"
                    " 'TOKEN', :debit, 987654321, 5, '', '', '', 0, now()) RETURNING id"
                ),
                {"op": transfer.operation_id, "debit": transfer.debit_account_id},
            )
        ).scalar_one()
        await conn.execute(
            text(
                "INSERT INTO wallet.entries (transfer_id, account_id, amount, balance_after, created_at)"
                " VALUES (:t, :debit, -5, 0, now()), (:t, 987654321, 5, 5, now())"
            ),
            {"t": ghost, "debit": transfer.debit_account_id},
        )
        # An entry of a posting that does not exist; and a balance its entries do not explain.
        await conn.execute(
            text(
                "INSERT INTO wallet.entries (transfer_id, account_id, amount, balance_after, created_at)"
                " VALUES (123456789, :credit, 1, 31, now())"
            ),
            {"credit": transfer.credit_account_id},
        )
        await conn.execute(
            text("UPDATE wallet.accounts SET posted = posted + 7 WHERE id = :credit"),
            {"credit": transfer.credit_account_id},
        )

    found = await kinds(wallet)
    dangling = found.get("DANGLING_REFERENCE", [])
    assert any(f"transfer {ghost} names account 987654321" in d for d in dangling), found
    assert any("entry" in d and "names account 987654321" in d for d in dangling), found
    assert any("names transfer 123456789" in d for d in dangling), found
    assert "BALANCE_NOT_ENTRIES" in found, found
    assert "ASSET_NOT_BALANCED" in found, found
    # The posting with a missing account still has its two balancing entries: only the reference is wrong.
    assert not any(f"transfer {ghost}:" in d for d in found.get("TRANSFER_NOT_BALANCED", [])), found
