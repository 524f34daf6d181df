"""`fanbank bench fanout` end to end at tiny settings: it runs, prints its JSON last, every
subscriber receives every tip (over both Streams processes, with both clients), and the money checks
(Audit, creator earnings, Gifts' own records and alerts) come out clean.

A benchmark is not a test (CONVENTIONS.md): nothing here looks at the latencies.
"""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.streams import bench

EXPECTED_KEYS = {"scenario", "subscribers", "events", "delivered", "missing", "p50_ms", "p99_ms", "audit"}


@pytest.mark.parametrize("client", ["raw", "grpc"])
def test_bench_prints_json_last_delivers_everything_and_audits_clean(
    client, database_url, redis_url, monkeypatch, capsys
):
    monkeypatch.setenv("FANBANK_DATABASE_URL", database_url)
    monkeypatch.setenv("FANBANK_REDIS_URL", redis_url)
    argv = ["--subscribers", "50", "--tips", "5", "--client", client, "--channels", "2", "--pool", "2"]
    # On its own thread: main() runs its own event loop with asyncio.run, which must not replace the
    # event loop pytest-asyncio keeps for this session's async tests.
    with ThreadPoolExecutor(1) as pool:
        code = pool.submit(bench.main, argv).result(timeout=180)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert EXPECTED_KEYS <= set(result), EXPECTED_KEYS - set(result)
    assert result["scenario"] == "fanout"
    assert result["subscribers"] == 50 and result["events"] == 5
    assert result["delivered"] == 250 and result["missing"] == 0, result
    assert result["audit"] == "ok", result["problems"]
    assert result["subscribers_ended"] == {}
    assert set(result["cpu_seconds"]) == {"wallet", "gifts", "streams-0", "streams-1", "load-0", "load-1"}
    assert code == 0
