"""`fanbank bench edge` end to end at tiny settings: it runs REST and gRPC tips and an SSE fan-out,
and prints its JSON last. A benchmark is not a test (CONVENTIONS.md): nothing here looks at the
figures, only at the shape of the line and that nothing was lost or refused."""

import json
from concurrent.futures import ThreadPoolExecutor

from services.edge import bench

EXPECTED_KEYS = {
    "scenario",
    "rest_tips_per_s",
    "grpc_tips_per_s",
    "rest_over_grpc_cost",
    "sse_clients",
    "sse_p99_ms",
    "sse_missing",
}


def test_bench_edge_prints_its_json_line_last(database_url, redis_url, monkeypatch, capsys):
    monkeypatch.setenv("FANBANK_DATABASE_URL", database_url)
    monkeypatch.setenv("FANBANK_REDIS_URL", redis_url)
    argv = ["--quick", "--seconds", "1", "--warmup", "0.5", "--clients", "4", "--pool", "2", "--fans", "20"]
    argv += ["--sse-clients", "10", "--sse-tips", "3", "--sse-interval", "0.05"]
    # On its own thread: main() runs its own event loop, which must not replace pytest-asyncio's.
    with ThreadPoolExecutor(1) as pool:
        code = pool.submit(bench.main, argv).result(timeout=180)
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert EXPECTED_KEYS <= set(result), EXPECTED_KEYS - set(result)
    assert result["scenario"] == "edge" and result["sse_clients"] == 10
    assert result["rest_tips_per_s"] > 0 and result["grpc_tips_per_s"] > 0
    assert result["rest_over_grpc_cost"] is not None and result["sse_p99_ms"] >= 0
    assert result["sse_missing"] == 0 and result["rest_errors"] == {} and result["grpc_errors"] == {}
    assert code == 0
