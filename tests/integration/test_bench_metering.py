"""`fanbank bench metering` end to end at tiny settings: it runs, prints its JSON last, and its own
checks (every call charged exactly its two blocks, by derived id; nothing left in flight; Wallet's
Audit; balances) pass.

A benchmark is not a test (CONVENTIONS.md): nothing here looks at the figures.
"""

import json
from concurrent.futures import ThreadPoolExecutor

from services.billing import bench

EXPECTED_KEYS = {
    "scenario", "calls", "tick_s", "blocks_per_s", "baseline_blocks_per_s", "ratio_vs_baseline", "audit",
    "charged", "autovacuum_runs", "cpu_s", "wal",
}  # fmt: skip


def test_bench_prints_json_last_and_its_checks_pass(database_url, monkeypatch, capsys):
    monkeypatch.setenv("FANBANK_DATABASE_URL", database_url)
    argv = ["--calls", "60", "--baseline-sample", "20", "--pool", "2"]
    # On its own thread: main() runs its own event loop with asyncio.run, which must not replace the
    # event loop pytest-asyncio keeps for this session's async tests.
    with ThreadPoolExecutor(1) as pool:
        code = pool.submit(bench.main, argv).result(timeout=180)
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert EXPECTED_KEYS <= set(result), EXPECTED_KEYS - set(result)
    assert result["scenario"] == "metering"
    assert result["audit"] == "ok", out
    assert result["calls"] == 60 and result["charged"] == 60
    assert code == 0
