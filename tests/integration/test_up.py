"""`fanbank up` from nothing: embedded PostgreSQL + Redis, migrations, Wallet healthy; SIGTERM stops
everything cleanly; a second run reuses the data."""

import os
import select
import signal
import socket
import subprocess
import sys
import time

import grpc

from shared import auth
from shared.config import load_settings
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as pb_grpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_until(process: subprocess.Popen, marker: str, seconds: int = 240) -> str:
    seen = ""
    deadline = time.monotonic() + seconds
    while marker not in seen:
        assert time.monotonic() < deadline, f"no {marker!r} in: {seen}"
        ready, _, _ = select.select([process.stdout], [], [], 1)
        if ready:
            line = process.stdout.readline()
            assert line or process.poll() is None, f"fanbank up exited: {seen}"
            seen += line
    return seen


def _run_up(env: dict) -> tuple[str, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        started = _read_until(process, "Ctrl-C stops everything")
        assert "wallet" in started and "health: SERVING" in started, started
        target = f"127.0.0.1:{env['FANBANK_WALLET_PORT']}"
        settings = load_settings()
        method = "/fanbank.wallet.v1.WalletService/GrantPromotion"
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.WalletServiceStub(channel)
            stub.GrantPromotion(
                pb.GrantPromotionRequest(request_id="up-grant", owner_id="fan-up", amount=7),
                metadata=auth.sign(settings.key_for("platform"), "platform", method),
                timeout=10,
            )
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
        assert "stopped" in rest
        return started, rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_up_starts_healthy_and_reuses_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANBANK_") or k in ("FANBANK_SERVICE_KEYS",)}
    env.update(
        FANBANK_DATA_DIR=str(tmp_path / "data"), FANBANK_WALLET_PORT=str(_free_port()), FANBANK_LOG_LEVEL="WARNING"
    )
    first, _ = _run_up(env)
    assert "applied now" in first and "migrations: 0 applied now" not in first
    second, _ = _run_up(env)
    assert "migrations: 0 applied now" in second  # same data folder, nothing to apply again
