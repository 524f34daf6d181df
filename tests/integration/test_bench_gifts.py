"""`fanbank bench tips` end to end at tiny settings: it runs, prints its JSON last, and its checks
(Audit, creator earnings, Gifts' own records and alerts) come out clean.

A benchmark is not a test (CONVENTIONS.md): nothing here looks at the figures.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.gifts import bench

EXPECTED_KEYS = {"scenario", "tips_per_s", "baseline_per_s", "ratio_vs_baseline", "p99_ms", "audit"}


@pytest.mark.parametrize("client", ["raw", "grpc"])
def test_bench_prints_json_last_and_audits_clean(database_url, redis_url, monkeypatch, capsys, client):
    monkeypatch.setenv("FANBANK_DATABASE_URL", database_url)
    monkeypatch.setenv("FANBANK_REDIS_URL", redis_url)
    argv = ["--quick", "--seconds", "1", "--warmup", "0.5", "--clients", "8", "--pool", "2", "--fans", "50"]
    argv += ["--client", client]
    # On its own thread: main() runs its own event loop with asyncio.run, which must not replace the
    # event loop pytest-asyncio keeps for this session's async tests.
    with ThreadPoolExecutor(1) as pool:
        code = pool.submit(bench.main, argv).result(timeout=180)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert EXPECTED_KEYS <= set(result), EXPECTED_KEYS - set(result)
    assert result["scenario"] == "tips"
    assert result["audit"] == "ok", result["audit"]
    assert result["clients"] == 8 and result["pool"] == 2
    assert result["tips_acknowledged"] > 0
    assert code == 0
