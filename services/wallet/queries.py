"""Wallet's reads and maintenance: balances, history, holds, hold expiry and the audit.

Reads go straight to the tables (never through the group committer): they lock nothing.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.wallet import model
from services.wallet.ledger import NOTIFY_BALANCES_SQL, notify_payloads
from services.wallet.model import Ref
from shared.clock import NOW_SQL
from shared.convert import timestamp
from shared.errors import invalid
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_VIOLATIONS_PER_KIND = 20


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: int
    ref: Ref
    posted: int
    pending: int
    created_at: dt.datetime

    def to_pb(self) -> pb.Account:
        return pb.Account(
            ref=self.ref.to_pb(),
            posted=self.posted,
            pending=self.pending,
            available=self.posted - self.pending,
            must_not_go_negative=self.ref.must_not_go_negative,
            create_time=timestamp(self.created_at),
        )


def _account(row) -> AccountRow:
    return AccountRow(row.id, Ref(row.owner_id, row.asset, row.code), row.posted, row.pending, row.created_at)


async def get_account(engine: AsyncEngine, ref: Ref) -> AccountRow | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT * FROM wallet.accounts WHERE owner_id = :o AND asset = :a AND code = :c"),
                {"o": ref.owner_id, "a": ref.asset, "c": ref.code},
            )
        ).first()
    return _account(row) if row else None


async def balance(engine: AsyncEngine, owner_id: str, asset: str) -> pb.GetBalanceResponse:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT * FROM wallet.accounts WHERE owner_id = :o AND asset = :a ORDER BY code"),
            {"o": owner_id, "a": asset},
        )
        accounts = [_account(r) for r in rows]
    spendable = [a for a in accounts if a.ref.code in model.SPENDABLE_CODES]
    return pb.GetBalanceResponse(
        owner_id=owner_id,
        asset=model.ASSET_ENUM[asset],
        spendable_posted=sum(a.posted for a in spendable),
        spendable_available=sum(a.posted - a.pending for a in spendable),
        accounts=[a.to_pb() for a in accounts],
    )


def _page_token(last_id: int, filters: list) -> str:
    raw = json.dumps({"after": last_id, "f": filters}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_page_token(token: str, filters: list) -> int | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        after = body["after"]
        if body["f"] != filters or not isinstance(after, int):
            raise ValueError
        return after
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise invalid("INVALID_PAGE_TOKEN", "page_token does not belong to this listing", field="page_token") from None


async def entries(
    engine: AsyncEngine, owner_id: str, asset: str, code: str | None, page_size: int, page_token: str
) -> pb.ListEntriesResponse:
    if page_size < 0 or page_size > MAX_PAGE_SIZE:
        raise invalid("INVALID_PAGE_SIZE", f"page_size must be between 0 and {MAX_PAGE_SIZE}", field="page_size")
    size = page_size or DEFAULT_PAGE_SIZE
    codes = sorted(model.SPENDABLE_CODES - {model.WALLET}) if code == model.WALLET else [code] if code else None
    filters = [owner_id, asset, codes]
    after = _parse_page_token(page_token, filters)
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT e.id, e.amount, e.balance_after, e.created_at, a.owner_id, a.asset, a.code,"
                    " t.item_id, t.code AS transfer_code, t.context_type, t.context_id, t.counterparty_id, t.funding"
                    " FROM wallet.accounts a JOIN wallet.entries e ON e.account_id = a.id"
                    " JOIN wallet.transfers t ON t.id = e.transfer_id"
                    " WHERE a.owner_id = :o AND a.asset = :a"
                    " AND (CAST(:codes AS text[]) IS NULL OR a.code = ANY(CAST(:codes AS text[])))"
                    " AND (CAST(:after AS bigint) IS NULL OR e.id < CAST(:after AS bigint))"
                    " ORDER BY e.id DESC LIMIT :n"
                ),
                {"o": owner_id, "a": asset, "codes": codes, "after": after, "n": size + 1},
            )
        ).all()
    response = pb.ListEntriesResponse()
    for row in rows[:size]:
        response.entries.add(
            entry_id=row.id,
            account=Ref(row.owner_id, row.asset, row.code).to_pb(),
            amount=row.amount,
            balance_after=row.balance_after,
            transfer_id=row.item_id,
            code=model.TRANSFER_CODE_ENUM[row.transfer_code],
            context_type=row.context_type,
            context_id=row.context_id,
            counterparty_id=row.counterparty_id,
            funding=model.FUNDING_ENUM[row.funding],
            create_time=timestamp(row.created_at),
        )
    if len(rows) > size:
        response.next_page_token = _page_token(rows[size - 1].id, filters)
    return response


async def get_hold(engine: AsyncEngine, scope: str, hold_id: str) -> pb.Hold | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT h.*, a.owner_id AS a_owner, a.asset AS a_asset, a.code AS a_code,"
                    " d.owner_id AS d_owner, d.asset AS d_asset, d.code AS d_code"
                    " FROM wallet.holds h JOIN wallet.accounts a ON a.id = h.account_id"
                    " JOIN wallet.accounts d ON d.id = h.destination_account_id"
                    " WHERE h.scope = :s AND h.key = :k"
                ),
                {"s": scope, "k": hold_id},
            )
        ).first()
    if row is None:
        return None
    hold = pb.Hold(
        hold_id=row.key,
        account=Ref(row.a_owner, row.a_asset, row.a_code).to_pb(),
        destination=Ref(row.d_owner, row.d_asset, row.d_code).to_pb(),
        amount=row.amount,
        captured_amount=row.captured_amount,
        status=pb.HoldStatus.Value(f"HOLD_STATUS_{row.status}"),
        code=model.TRANSFER_CODE_ENUM[row.code],
        context_type=row.context_type,
        context_id=row.context_id,
        expire_time=timestamp(row.expires_at),
        create_time=timestamp(row.created_at),
    )
    if row.resolved_at is not None:
        hold.resolve_time.CopyFrom(timestamp(row.resolved_at))
    return hold


async def expire_holds(engine: AsyncEngine, limit: int) -> int:
    """Expires open holds past their expiry by database time. Locks holds, then accounts by id —
    the ledger's order — and skips holds a concurrent capture or void is resolving."""
    async with engine.begin() as conn:
        due = (
            await conn.execute(
                text(
                    "SELECT id, account_id FROM wallet.holds"
                    f" WHERE status = 'OPEN' AND expires_at <= {NOW_SQL}"
                    " ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"n": limit},
            )
        ).all()
        if not due:
            return 0
        await conn.execute(
            text("SELECT id FROM wallet.accounts WHERE id = ANY(CAST(:ids AS bigint[])) ORDER BY id FOR UPDATE"),
            {"ids": sorted({r.account_id for r in due})},
        )
        owners = await conn.execute(
            text(
                "WITH h AS (UPDATE wallet.holds SET status = 'EXPIRED', resolved_at = "
                f"{NOW_SQL} WHERE id = ANY(CAST(:ids AS bigint[])) RETURNING account_id, amount),"
                " s AS (SELECT account_id, sum(amount) AS amount FROM h GROUP BY account_id)"
                " UPDATE wallet.accounts a SET pending = a.pending - s.amount FROM s WHERE a.id = s.account_id"
                " RETURNING a.owner_id, a.asset"
            ),
            {"ids": [r.id for r in due]},
        )
        await conn.execute(
            text(f"SELECT {NOTIFY_BALANCES_SQL}"), {"notify": notify_payloads({(r.owner_id, r.asset) for r in owners})}
        )
    return len(due)


async def audit(engine: AsyncEngine) -> pb.AuditResponse:
    """Checks every ledger invariant on one consistent snapshot and reports the figures."""
    response = pb.AuditResponse()
    async with engine.connect() as conn:
        await conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        now = await conn.scalar(text(f"SELECT {NOW_SQL}"))
        response.audit_time.CopyFrom(timestamp(now))
        totals = {
            r.asset: r
            for r in await conn.execute(
                text(
                    "SELECT asset, sum(posted) AS posted, sum(pending) AS pending, count(*) AS accounts,"
                    " coalesce(sum(-posted) FILTER (WHERE must_not_go_negative AND posted < 0), 0) AS debt"
                    " FROM wallet.accounts GROUP BY asset"
                )
            )
        }
        holds = dict(
            (
                await conn.execute(
                    text("SELECT asset, sum(amount) FROM wallet.holds WHERE status = 'OPEN' GROUP BY asset")
                )
            ).all()
        )
        transfers = dict(
            (await conn.execute(text("SELECT asset, count(*) FROM wallet.transfers GROUP BY asset"))).all()
        )
        entry_counts = dict(
            (
                await conn.execute(
                    text(
                        "SELECT a.asset, count(*) FROM wallet.entries e"
                        " JOIN wallet.accounts a ON a.id = e.account_id GROUP BY a.asset"
                    )
                )
            ).all()
        )
        for asset in sorted(totals):
            row = totals[asset]
            response.totals.add(
                asset=model.ASSET_ENUM[asset],
                posted_sum=int(row.posted),
                pending_sum=int(row.pending),
                open_holds_sum=int(holds.get(asset, 0)),
                account_count=row.accounts,
                transfer_count=transfers.get(asset, 0),
                entry_count=entry_counts.get(asset, 0),
                debt_sum=int(row.debt),
            )
            if int(row.posted) != 0:
                response.violations.add(kind="ASSET_NOT_BALANCED", detail=f"{asset}: Σ posted = {row.posted}")
        for kind, sql in _VIOLATION_QUERIES:
            for row in await conn.execute(text(sql + f" LIMIT {MAX_VIOLATIONS_PER_KIND}")):
                response.violations.add(kind=kind, detail=row[0])
        for row in await conn.execute(
            text(
                "SELECT owner_id, asset, code, -posted AS debt FROM wallet.accounts"
                " WHERE must_not_go_negative AND posted < 0 ORDER BY id LIMIT 1000"
            )
        ):
            response.debts.add(account=Ref(row.owner_id, row.asset, row.code).to_pb(), amount=row.debt)
        await conn.rollback()
    response.ok = not response.violations
    return response


# Each query answers one text column describing a violation.
_VIOLATION_QUERIES = (
    (
        "PENDING_MISMATCH",
        "SELECT format('account %s: pending %s, open holds %s', a.id, a.pending, coalesce(h.s, 0))"
        " FROM wallet.accounts a LEFT JOIN (SELECT account_id, sum(amount) AS s FROM wallet.holds"
        " WHERE status = 'OPEN' GROUP BY account_id) h ON h.account_id = a.id WHERE a.pending <> coalesce(h.s, 0)",
    ),
    (
        "NEGATIVE_BALANCE",
        # Only a clawback may take a must-not-go-negative account below zero (that is debt).
        "SELECT format('entry %s on account %s left %s by a %s', e.id, a.id, e.balance_after, t.code)"
        " FROM wallet.entries e JOIN wallet.accounts a ON a.id = e.account_id"
        " JOIN wallet.transfers t ON t.id = e.transfer_id"
        " WHERE a.must_not_go_negative AND e.amount < 0 AND e.balance_after < 0 AND t.code <> 'CLAWBACK'",
    ),
    (
        "TRANSFER_NOT_BALANCED",
        "SELECT format('transfer %s: %s entries summing to %s', t.id, count(e.id), coalesce(sum(e.amount), 0))"
        " FROM wallet.transfers t LEFT JOIN wallet.entries e ON e.transfer_id = t.id"
        " GROUP BY t.id, t.amount, t.debit_account_id, t.credit_account_id"
        " HAVING count(e.id) <> 2 OR coalesce(sum(e.amount), 0) <> 0"
        " OR bool_or(e.amount = -t.amount AND e.account_id = t.debit_account_id) IS NOT TRUE"
        " OR bool_or(e.amount = t.amount AND e.account_id = t.credit_account_id) IS NOT TRUE",
    ),
    (
        "BALANCE_NOT_ENTRIES",
        "SELECT format('account %s: posted %s, entries sum %s', a.id, a.posted, coalesce(e.s, 0))"
        " FROM wallet.accounts a LEFT JOIN (SELECT account_id, sum(amount) AS s FROM wallet.entries"
        " GROUP BY account_id) e ON e.account_id = a.id WHERE a.posted <> coalesce(e.s, 0)",
    ),
    (
        # The references the write path no longer has the database check (migrations 0002, 0005).
        "DANGLING_REFERENCE",
        "SELECT format('transfer %s names account %s, which does not exist', t.id, x.id)"
        " FROM wallet.transfers t CROSS JOIN LATERAL (VALUES (t.debit_account_id), (t.credit_account_id)) x(id)"
        " WHERE NOT EXISTS (SELECT 1 FROM wallet.accounts a WHERE a.id = x.id)"
        " UNION ALL SELECT format('transfer %s names operation %s, which does not exist', t.id, t.operation_id)"
        " FROM wallet.transfers t WHERE NOT EXISTS (SELECT 1 FROM wallet.operations o WHERE o.id = t.operation_id)"
        " UNION ALL SELECT format('entry %s names transfer %s, which does not exist', e.id, e.transfer_id)"
        " FROM wallet.entries e WHERE NOT EXISTS (SELECT 1 FROM wallet.transfers t WHERE t.id = e.transfer_id)"
        " UNION ALL SELECT format('entry %s names account %s, which does not exist', e.id, e.account_id)"
        " FROM wallet.entries e WHERE NOT EXISTS (SELECT 1 FROM wallet.accounts a WHERE a.id = e.account_id)",
    ),
    (
        "REVERSED_MISMATCH",
        "SELECT format('transfer %s: reversed_amount %s, reversals %s', t.id, t.reversed_amount, coalesce(r.s, 0))"
        " FROM wallet.transfers t LEFT JOIN (SELECT reverses_transfer_id AS id, sum(amount) AS s"
        " FROM wallet.transfers WHERE reverses_transfer_id IS NOT NULL GROUP BY 1) r ON r.id = t.id"
        " WHERE t.reversed_amount <> coalesce(r.s, 0)",
    ),
    (
        "HOLD_RESOLUTION",
        "SELECT format('hold %s: status %s, capture transfer %s', id, status, capture_transfer_id)"
        " FROM wallet.holds WHERE (status = 'CAPTURED') <> (capture_transfer_id IS NOT NULL)",
    ),
)
