"""`fanbank bench wallet-hot` end to end at tiny settings: it runs, prints its JSON last, audits clean.

A benchmark is not a test (CONVENTIONS.md): nothing here looks at the figures.
"""

import json
from concurrent.futures import ThreadPoolExecutor

from services.wallet import bench

EXPECTED_KEYS = {
    "scenario", "transfers_per_s", "baseline_per_s", "ratio_vs_baseline", "echo_rpc_per_s", "ratio_vs_echo",
    "p50_ms", "p99_ms", "clients", "pool", "synchronous_commit", "audit",
}  # fmt: skip


def test_bench_prints_json_last_and_audits_clean(database_url, monkeypatch, capsys):
    monkeypatch.setenv("FANBANK_DATABASE_URL", database_url)
    argv = ["--quick", "--seconds", "1", "--warmup", "0.5", "--clients", "8", "--pool", "2", "--fans", "20"]
    # On its own thread: main() runs its own event loop with asyncio.run, which must not replace the
    # event loop pytest-asyncio keeps for this session's async tests.
    with ThreadPoolExecutor(1) as pool:
        code = pool.submit(bench.main, argv).result(timeout=120)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(last)
    assert EXPECTED_KEYS <= set(result), EXPECTED_KEYS - set(result)
    assert result["scenario"] == "wallet-hot"
    assert result["audit"] == "ok", result["audit"]
    assert result["clients"] == 8 and result["pool"] == 2
    assert result["tips_acknowledged"] > 0
    assert code == 0
