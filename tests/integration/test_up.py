"""`fanbank up` from nothing: embedded PostgreSQL + Redis, migrations, Wallet healthy; SIGTERM stops
everything cleanly; a second run reuses the data."""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import grpc

from shared import auth
from shared.config import load_settings
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2 as pb
from shared.gen.fanbank.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from tests.harness import free_port


class _Lines:
    """Reads the process's output on a thread: select() on a buffered pipe misses lines that arrived
    together, so a reader blocked in readline() is the reliable way."""

    def __init__(self, process: subprocess.Popen):
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen = ""
        threading.Thread(target=self._pump, args=(process,), daemon=True).start()

    def _pump(self, process: subprocess.Popen) -> None:
        for line in process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def until(self, marker: str, seconds: int = 240) -> str:
        deadline = time.monotonic() + seconds
        while marker not in self.seen:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            assert line is not None, f"fanbank up exited: {self.seen}"
            self.seen += line
        return self.seen

    def rest(self) -> str:
        while (line := self.lines.get(timeout=60)) is not None:
            self.seen += line
        return self.seen


def _run_up(env: dict) -> tuple[str, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    output = _Lines(process)
    try:
        started = output.until("curl")
        assert "wallet" in started and "health: SERVING" in started, started
        edge_line = next(line for line in started.splitlines() if line.strip().startswith("edge"))
        assert "health: SERVING" in edge_line, started
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
        rest = output.rest()
        assert process.wait(timeout=60) == 0, rest
        assert "stopped" in rest
        return started, rest
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the services and embedded servers too
            process.wait()


def test_up_starts_healthy_and_reuses_data(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FANBANK_") or k in ("FANBANK_SERVICE_KEYS",)}
    env.update(FANBANK_DATA_DIR=str(tmp_path / "data"), FANBANK_LOG_LEVEL="WARNING")
    for name in ("WALLET", "BILLING", "STREAMS", "GIFTS", "PAYOUTS", "EDGE"):
        env[f"FANBANK_{name}_PORT"] = str(free_port())  # never a fixed port another run may hold
    first, _ = _run_up(env)
    assert "applied now" in first and "migrations: 0 applied now" not in first
    second, _ = _run_up(env)
    assert "migrations: 0 applied now" in second  # same data folder, nothing to apply again
