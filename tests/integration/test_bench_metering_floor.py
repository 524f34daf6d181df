"""`fanbank bench metering-floor` end to end at tiny settings: every variant's two ticks charge every
call (the bench raises otherwise), and the JSON comes last with a figure per variant.

A benchmark is not a test (CONVENTIONS.md): nothing here looks at the figures' values.
"""

import json
from concurrent.futures import ThreadPoolExecutor

from services.billing import floor


def test_floor_bench_prints_json_last_with_every_variant(database_url, monkeypatch, capsys):
    monkeypatch.setenv("FANBANK_DATABASE_URL", database_url)
    # On its own thread, as the metering bench's test: main() runs asyncio.run, which must not touch
    # the event loop pytest-asyncio keeps for this session's async tests.
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(floor.main, ["--calls", "700", "--workers", "2"]).result(timeout=180) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["scenario"] == "metering-floor" and result["calls"] == 700
    assert set(result["postgres"]) == set(floor.VARIANTS)
    for figures in result["postgres"].values():
        assert {"tick_s", "postgres_cpu_s", "us_per_block", "wal_records_per_unit"} <= set(figures)
    assert result["wire_us_per_block"] > 0


def test_wire_step_answers_every_block():
    floor._wire_step(3)()  # raises if an answer or an event is missing
