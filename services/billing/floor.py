"""`fanbank bench metering-floor`: the least CPU any metering tick meeting the brief could cost here.

`fanbank bench metering` measures the tick as built. This scenario measures what no design can go
below, so the tick's target can be judged against the machine it runs on (docs/ARCHITECTURE.md,
Billing "Metering"). It has two parts.

PostgreSQL: one tick's writes in the leanest row model that still meets DESIGN.md, on tables of its
own, as set-based SQL with no service in between. Per round of ROUND blocks, three transactions:
  1. the claim: `FOR UPDATE SKIP LOCKED` on the due calls, one intent row for the whole round, and
     the calls taken off the due index;
  2. the Wallet transaction: the accounts locked in id order, one posting per block that is also its
     own idempotency row (a unique key and the stored answer), its two entries with running balances,
     and the balances;
  3. the settle: each call advanced in one update, which also numbers its event; one outbox row per
     block; the intent resolved.

`--workers` connections run rounds side by side until nothing is due. Then the same tick runs in
three heavier variants. `channel_rows` adds a per-channel sequence row for each event, which is how
shared/outbox.py numbers events. `operation_rows` moves the idempotency record into a row of its
own, as Wallet's `operations` table does. `both` adds both. Each variant gets fresh tables, an
untimed first tick and a VACUUM, as the metering bench does.

Wire: the protobuf work of one block, the least Python either service does per block. Billing
builds and serializes the BatchTransfer request with its real `transfer_legs`. Wallet parses it and
builds and serializes an answer of the shape it sends. Billing parses that answer and serializes
the block's event with its real `call_events`. This is timed in this process, in one thread.

Everything else the services do per block comes on top of these figures. That includes validation,
balance checks, idempotency, the answers and the events, and gRPC itself. The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from types import SimpleNamespace

import psycopg

from services.billing.metering import Charge, call_events, transfer_legs
from shared.bench import WAL_SQL, bounded, cpu_seconds, database, plain_url, postgres_pids, postmaster_of, wal_figures
from shared.config import load_settings
from shared.gen.fanbank.billing.v1 import billing_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as wpb

SCHEMA = "metering_floor"
ROUND = 500  # blocks per round: one BatchTransfer's worth (metering.MAX_GROUPS_PER_RPC)
TOKENS = 50
FUND = 1_000_000
VARIANTS = {
    "lean": (False, False),
    "channel_rows": (True, False),
    "operation_rows": (False, True),
    "both": (True, True),
}
WIRE_REPEATS = 5


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="fanbank bench metering-floor", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 calls")
    parser.add_argument("--calls", type=bounded(1, 1_000_000), help="live calls (100,000; quick 20,000)")
    parser.add_argument("--workers", type=bounded(1, 32), default=4, help="connections running rounds (4)")
    parser.add_argument(
        "--repeat", type=bounded(1, 10), default=1, help="runs of each variant; the least CPU counts (1)"
    )
    opts = parser.parse_args(argv)
    if opts.calls is None:
        opts.calls = 20_000 if opts.quick else 100_000
    return opts


def _tables_sql(calls: int, channel_rows: bool, operation_rows: bool) -> list[str]:
    s = SCHEMA
    sql = [
        f"DROP SCHEMA IF EXISTS {s} CASCADE",
        f"CREATE SCHEMA {s}",
        # The call: the columns a settle changes, its history indexes (by fan, by creator) and the
        # due index; half of each page left free, as billing.calls does, for heap-only updates.
        f"""CREATE TABLE {s}.calls (call_id text PRIMARY KEY, fan_id text NOT NULL, creator_id text NOT NULL,
            status text NOT NULL, fan_account bigint NOT NULL, creator_account bigint NOT NULL,
            next_block_no bigint NOT NULL, next_block_at timestamptz NOT NULL, deadline_at timestamptz,
            blocks_charged bigint NOT NULL DEFAULT 0, tokens_charged bigint NOT NULL DEFAULT 0,
            event_seq bigint NOT NULL DEFAULT 0, started_at timestamptz NOT NULL DEFAULT now())
            WITH (fillfactor = 50)""",
        f"CREATE INDEX ON {s}.calls (fan_id, started_at)",
        f"CREATE INDEX ON {s}.calls (creator_id, started_at)",
        f"CREATE INDEX ON {s}.calls (deadline_at) WHERE deadline_at IS NOT NULL",
        f"CREATE TABLE {s}.intents (id bigserial PRIMARY KEY, blocks text NOT NULL)",
        f"""CREATE TABLE {s}.outbox (channel text NOT NULL, seq bigint NOT NULL, event_type text NOT NULL,
            payload bytea NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (channel, seq))""",
        f"""CREATE TABLE {s}.accounts (id bigserial PRIMARY KEY, owner_id text NOT NULL, code text NOT NULL,
            posted bigint NOT NULL, UNIQUE (owner_id, code)) WITH (fillfactor = 50)""",
        # The posting, its own idempotency row unless `operation_rows`; indexed by its key and by
        # credit account and time (earnings by source and month), as wallet.transfers is.
        f"""CREATE TABLE {s}.postings (id bigserial PRIMARY KEY, operation_id bigint, scope text, key text,
            request bytea, response bytea, debit bigint NOT NULL, credit bigint NOT NULL, amount bigint NOT NULL,
            code text NOT NULL, context_type text, context_id text, counterparty_id text,
            created_at timestamptz NOT NULL DEFAULT now())""",
        f"CREATE INDEX ON {s}.postings (credit, created_at)",
        f"""CREATE TABLE {s}.entries (account_id bigint NOT NULL, id bigserial, posting_id bigint NOT NULL,
            amount bigint NOT NULL, balance_after bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (account_id, id))""",
        f"""INSERT INTO {s}.accounts (owner_id, code, posted)
            SELECT 'fan-' || i, 'PURCHASED', {FUND} FROM generate_series(1, {calls}) i
            UNION ALL SELECT 'creator-' || i, 'EARNINGS', 0 FROM generate_series(1, {calls}) i""",
        f"""INSERT INTO {s}.calls (call_id, fan_id, creator_id, status, fan_account, creator_account,
                next_block_no, next_block_at, deadline_at)
            SELECT 'call-' || i, 'fan-' || i, 'creator-' || i, 'ACTIVE', i, {calls} + i, 0, now(), now()
            FROM generate_series(1, {calls}) i""",
    ]
    if operation_rows:
        sql += [
            f"""CREATE TABLE {s}.operations (id bigserial PRIMARY KEY, scope text NOT NULL, kind text NOT NULL,
                key text NOT NULL, request jsonb, ok boolean NOT NULL, response bytea,
                created_at timestamptz NOT NULL DEFAULT now(), UNIQUE (scope, kind, key))""",
        ]
    else:
        sql.append(f"CREATE UNIQUE INDEX ON {s}.postings (scope, key)")
    if channel_rows:
        sql += [
            f"""CREATE TABLE {s}.outbox_channels (channel text PRIMARY KEY, last_seq bigint NOT NULL,
                published_seq bigint NOT NULL DEFAULT 0)""",
            f"CREATE INDEX ON {s}.outbox_channels (channel) WHERE published_seq < last_seq",
        ]
    return sql


_REQUEST = b'{"items":[{"debit":"fan","credit":"creator","amount":50,"code":"CALL_BLOCK"}]}'


async def _round(conn: psycopg.AsyncConnection, channel_rows: bool, operation_rows: bool, answer: bytes) -> int:
    """One round of at most ROUND due blocks, in the three transactions above; answers its blocks."""
    s = SCHEMA
    async with conn.transaction():
        cur = await conn.execute(
            f"""SELECT call_id, creator_id, fan_account, creator_account, next_block_no FROM {s}.calls
                WHERE deadline_at <= now() AND status = 'ACTIVE' ORDER BY deadline_at LIMIT %s
                FOR UPDATE SKIP LOCKED""",
            (ROUND,),
        )
        due = await cur.fetchall()
        if not due:
            return 0
        ids = [row[0] for row in due]
        cur = await conn.execute(
            f"INSERT INTO {s}.intents (blocks) VALUES (%s) RETURNING id",
            (" ".join(f"{row[0]}:{row[4]}" for row in due),),
        )
        intent = (await cur.fetchone())[0]
        await conn.execute(f"UPDATE {s}.calls SET deadline_at = NULL WHERE call_id = ANY(%s)", (ids,))
    keys = [f"call:{row[0]}:block:{row[4]}" for row in due]
    fans = [row[2] for row in due]
    creators = [row[3] for row in due]
    async with conn.transaction():
        accounts = sorted(set(fans) | set(creators))
        cur = await conn.execute(
            f"SELECT id, posted FROM {s}.accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (accounts,)
        )
        balance = dict(await cur.fetchall())
        after_debit, after_credit = [], []
        for fan, creator in zip(fans, creators, strict=True):
            balance[fan] -= TOKENS
            balance[creator] += TOKENS
            after_debit.append(balance[fan])
            after_credit.append(balance[creator])
        operation_ids = [None] * len(due)
        if operation_rows:
            cur = await conn.execute(
                f"""INSERT INTO {s}.operations (scope, kind, key, request, ok, response)
                    SELECT 'billing', 'BATCH', k, CAST(%s AS jsonb), true, %s FROM unnest(CAST(%s AS text[])) k
                    RETURNING id""",
                (_REQUEST.decode(), answer, keys),
            )
            operation_ids = [row[0] for row in await cur.fetchall()]
        own = not operation_rows  # the posting is its own idempotency row
        cur = await conn.execute(
            f"""INSERT INTO {s}.postings (operation_id, scope, key, request, response, debit, credit, amount, code,
                    context_type, context_id, counterparty_id)
                SELECT o, CASE WHEN %s THEN 'billing' END, CASE WHEN %s THEN k END, CASE WHEN %s THEN %s END,
                    CASE WHEN %s THEN %s END, d, c, {TOKENS}, 'CALL_BLOCK', 'call', i, p
                FROM unnest(CAST(%s AS bigint[]), CAST(%s AS text[]), CAST(%s AS bigint[]), CAST(%s AS bigint[]),
                    CAST(%s AS text[]), CAST(%s AS text[])) AS u(o, k, d, c, i, p)
                RETURNING id""",
            (own, own, own, _REQUEST, own, answer, operation_ids, keys, fans, creators, ids, [r[1] for r in due]),
        )
        postings = [row[0] for row in await cur.fetchall()]
        await conn.execute(
            f"""INSERT INTO {s}.entries (account_id, posting_id, amount, balance_after)
                SELECT * FROM unnest(CAST(%s AS bigint[]), CAST(%s AS bigint[]), CAST(%s AS bigint[]),
                    CAST(%s AS bigint[]))""",
            (
                fans + creators,
                postings + postings,
                [-TOKENS] * len(due) + [TOKENS] * len(due),
                after_debit + after_credit,
            ),
        )
        await conn.execute(
            f"""UPDATE {s}.accounts x SET posted = u.p
                FROM unnest(CAST(%s AS bigint[]), CAST(%s AS bigint[])) AS u(id, p) WHERE x.id = u.id""",
            (accounts, [balance[a] for a in accounts]),
        )
    async with conn.transaction():
        cur = await conn.execute(
            f"""UPDATE {s}.calls SET next_block_no = next_block_no + 1,
                    next_block_at = next_block_at + interval '30 seconds',
                    deadline_at = next_block_at + interval '30 seconds',
                    blocks_charged = blocks_charged + 1, tokens_charged = tokens_charged + {TOKENS},
                    event_seq = event_seq + 1
                WHERE call_id = ANY(%s) RETURNING call_id, event_seq""",
            (ids,),
        )
        numbered = await cur.fetchall()
        channels = [f"call:{row[0]}" for row in numbered]
        if channel_rows:  # the sequence from the channel's own row, as shared/outbox.py's append
            cur = await conn.execute(
                f"""INSERT INTO {s}.outbox_channels AS c (channel, last_seq)
                    SELECT ch, 1 FROM unnest(CAST(%s AS text[])) ch ORDER BY ch
                    ON CONFLICT (channel) DO UPDATE SET last_seq = c.last_seq + 1 RETURNING channel, last_seq""",
                (sorted(channels),),
            )
            seqs = dict(await cur.fetchall())
            numbered = [(row[0], seqs[channel]) for row, channel in zip(numbered, channels, strict=True)]
        await conn.execute(
            f"""INSERT INTO {s}.outbox (channel, seq, event_type, payload)
                SELECT c, q, 'BLOCK_CHARGED', %s FROM unnest(CAST(%s AS text[]), CAST(%s AS bigint[])) AS u(c, q)""",
            (answer[:60], channels, [row[1] for row in numbered]),
        )
        await conn.execute(f"DELETE FROM {s}.intents WHERE id = %s", (intent,))
    return len(due)


async def _tick(conns: list[psycopg.AsyncConnection], channel_rows: bool, operation_rows: bool) -> int:
    answer = os.urandom(120)  # about the size of a block's stored BatchTransfer answer

    async def worker(conn: psycopg.AsyncConnection) -> int:
        done = 0
        while n := await _round(conn, channel_rows, operation_rows, answer):
            done += n
        return done

    return sum(await asyncio.gather(*(worker(conn) for conn in conns)))


async def _variant(url: str, calls: int, workers: int, channel_rows: bool, operation_rows: bool) -> dict:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        for statement in _tables_sql(calls, channel_rows, operation_rows):
            await admin.execute(statement)
        await admin.execute(f"VACUUM ANALYZE {SCHEMA}.calls")
        await admin.execute(f"VACUUM ANALYZE {SCHEMA}.accounts")
        root = (await (await admin.execute("SELECT pg_backend_pid()")).fetchone())[0]
        conns = [await psycopg.AsyncConnection.connect(url) for _ in range(workers)]
        try:
            # A floor is a tick between checkpoints: the checkpoint comes before the untimed tick,
            # which then writes the full images of the pages the measured tick touches again. One
            # that the WAL's volume requests may still fall in the tick: the JSON counts the images.
            await admin.execute("CHECKPOINT")
            first = await _tick(conns, channel_rows, operation_rows)  # untimed: block 0, as the metering bench
            await admin.execute(f"UPDATE {SCHEMA}.calls SET deadline_at = now() - interval '1 second'")
            for table in ("calls", "accounts", "postings", "entries", "outbox", "intents"):
                await admin.execute(f"VACUUM ANALYZE {SCHEMA}.{table}")
            if channel_rows:
                await admin.execute(f"UPDATE {SCHEMA}.outbox_channels SET published_seq = last_seq")
                await admin.execute(f"VACUUM ANALYZE {SCHEMA}.outbox_channels")
            pids = postgres_pids(postmaster_of(root))  # every connection is open: their backends count
            if not pids:
                raise RuntimeError("PostgreSQL does not run on this machine: its CPU cannot be measured")
            wal_before = await (await admin.execute(WAL_SQL)).fetchone()
            cpu_before = cpu_seconds(pids)
            started = time.perf_counter()
            blocks = await _tick(conns, channel_rows, operation_rows)
            tick_s = time.perf_counter() - started
            pg_cpu = cpu_seconds(pids) - cpu_before
            wal = wal_figures(wal_before, await (await admin.execute(WAL_SQL)).fetchone(), blocks)
        finally:
            for conn in conns:
                await conn.close()
        await admin.execute(f"DROP SCHEMA {SCHEMA} CASCADE")
    if first != calls or blocks != calls:
        raise RuntimeError(f"a tick charged {first} and {blocks} blocks of {calls}")
    return {
        "tick_s": round(tick_s, 3),
        "postgres_cpu_s": round(pg_cpu, 2),
        "us_per_block": round(pg_cpu / blocks * 1e6, 1),
        **wal,
    }


def _wire_step(n: int) -> Callable[[], None]:
    """One round's protobuf work for `n` blocks (see the module docstring)."""
    charges = [Charge(f"{i:08d}-4b1c-9d1e-floor", f"fan-{i}", f"creator-{i}", 7, TOKENS, 0, 0) for i in range(n)]
    # What the settle reads back for each call and hands to call_events.
    rows = [
        SimpleNamespace(call_id=c.call_id, fan_id=c.fan_id, creator_id=c.creator_id, media_node="node-1")
        for c in charges
    ]
    stamp = {"seconds": 1_700_000_000}

    def answer(spec) -> dict:
        debit = {"owner_id": spec.debit.owner_id, "code": wpb.ACCOUNT_CODE_USER_PURCHASED, "asset": wpb.ASSET_TOKEN}
        credit = {"owner_id": spec.credit.owner_id, "code": spec.credit.code, "asset": spec.credit.asset}
        transfer = {
            "transfer_id": spec.transfer_id, "debit": debit, "credit": credit, "amount": spec.amount,
            "code": spec.code, "context_type": spec.context_type, "context_id": spec.context_id,
            "counterparty_id": spec.counterparty_id, "create_time": stamp, "debit_available_after": FUND,
            "postings": [{"debit": debit, "credit": credit, "amount": spec.amount, "funding": wpb.FUNDING_PURCHASED}],
        }  # fmt: skip
        return {"transfer_id": spec.transfer_id, "transfer": transfer}

    def step() -> None:
        specs = [transfer_legs(charge) for charge in charges]
        legs = [leg for legs in specs for leg in legs]
        wire = wpb.BatchTransferRequest(mode=wpb.BATCH_MODE_INDEPENDENT, transfers=legs).SerializeToString()
        request = wpb.BatchTransferRequest.FromString(wire)
        wire = wpb.BatchTransferResponse(results=[answer(spec) for spec in request.transfers]).SerializeToString()
        by_id = {r.transfer_id: r for r in wpb.BatchTransferResponse.FromString(wire).results}
        at = dt.datetime.now(dt.UTC)
        for row, charge, legs in zip(rows, charges, specs, strict=True):
            if by_id[legs[-1]["transfer_id"]].transfer.debit_available_after < 0:
                raise AssertionError("the answer's spendable amount did not come through")
            call_events(row, pb.CALL_EVENT_TYPE_BLOCK_CHARGED, at, block_no=charge.block_no, tokens=charge.tokens)

    return step


def wire_us_per_block() -> float:
    step = _wire_step(ROUND)
    step()  # warm
    best = float("inf")
    for _ in range(WIRE_REPEATS):
        started = time.process_time()
        step()
        best = min(best, time.process_time() - started)
    return best / ROUND * 1e6


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {line}", flush=True)

    variants = {}
    with database(load_settings()) as url:
        # Variants take turns, so a slow phase of a shared machine does not land on one of them only.
        wire = float("inf")
        for _ in range(opts.repeat):
            wire = min(wire, wire_us_per_block())
            say(f"wire: {wire:.1f} µs of protobuf per block (request, answer, event), one thread")
            for name, (channel_rows, operation_rows) in VARIANTS.items():
                say(f"{name}: {opts.calls:,} calls, {opts.workers} connections …")
                figures = asyncio.run(_variant(plain_url(url), opts.calls, opts.workers, channel_rows, operation_rows))
                say(
                    f"{name}: tick {figures['tick_s']:.2f} s, PostgreSQL {figures['postgres_cpu_s']:.2f} CPU-s = "
                    f"{figures['us_per_block']:.1f} µs per block; WAL {figures['wal_records_per_unit']} records, "
                    f"{figures['wal_bytes_per_unit']} bytes per block, {figures['wal_full_page_images']} full page images"
                )
                if name not in variants or figures["us_per_block"] < variants[name]["us_per_block"]:
                    variants[name] = figures
    floor_cpu_s = (variants["lean"]["us_per_block"] + wire) * opts.calls / 1e6
    cores = os.cpu_count() or 1
    say(f"floor: {floor_cpu_s:.2f} CPU-s for {opts.calls:,} blocks before any per-block logic; {cores} cores here")
    result = {
        "scenario": "metering-floor",
        "calls": opts.calls,
        "workers": opts.workers,
        "repeat": opts.repeat,
        "cores": cores,
        "wire_us_per_block": round(wire, 1),
        "postgres": variants,
        "floor_cpu_s": round(floor_cpu_s, 2),
        "floor_tick_s_all_cores": round(floor_cpu_s / cores, 2),
    }
    print(json.dumps(result), flush=True)
    return 0
