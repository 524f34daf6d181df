"""Runtime settings: `FANBANK_*` environment variables plus the preset named by FANBANK_PRESET.

Every knob a deployment may turn is read here, once, so a service never reads the environment
itself. README.md carries the same table for operators.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SERVICES = ("wallet", "billing", "streams", "gifts", "payouts")
DEFAULT_PORTS = {"wallet": 50051, "billing": 50052, "streams": 50053, "gifts": 50054, "payouts": 50055}
# Callers that may call as themselves (no user) with a service's rights: the services and the
# platform's own backend. The edge is not one: without a user it is an anonymous visitor (see
# shared/auth.py), so nothing it forwards can reach a service-only RPC.
DEFAULT_INTERNAL_CALLERS = (*SERVICES, "platform", "admin")
# Callers whose signed user id and roles a service believes.
DEFAULT_USER_DELEGATES = ("edge", "platform")
# Used only when no FANBANK_SERVICE_KEYS is configured, so `make up` works out of the box. Its use
# is logged as a warning at start-up; a deployment sets real keys.
DEV_SECRET = "fanbank-dev-secret-not-for-production"
# Signs and verifies users' bearer tokens at the edge when FANBANK_JWT_SECRET is unset, so `make up`
# and its example curl work out of the box; the edge logs a warning when it is in use.
DEV_JWT_SECRET = "fanbank-dev-jwt-secret-not-for-production"
JWT_ALGORITHMS = ("HS256", "RS256")
# LiveKit's webhook key pair when FANBANK_LIVEKIT_API_KEY/SECRET are unset (so `make up` works);
# Billing logs a warning when it is in use.
DEV_LIVEKIT_API_KEY = "fanbank-dev-livekit"
DEV_LIVEKIT_API_SECRET = "fanbank-dev-livekit-secret-not-for-production"


class ConfigError(ValueError):
    pass


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _int(name: str, default: int, lo: int, hi: int) -> int:
    raw = _env(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from exc
    if not lo <= value <= hi:
        raise ConfigError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _csv(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    raw = _env(name)
    if raw is None:
        return default
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _networks(name: str) -> tuple[str, ...]:
    """Comma-separated IP addresses or CIDR networks (e.g. `10.0.0.0/8,192.0.2.7`), checked and
    normalized (a network written with host bits, `10.1.2.3/8`, becomes `10.0.0.0/8`)."""
    normalized = []
    for entry in _csv(name, ()):
        try:
            if "/" in entry:
                normalized.append(str(ipaddress.ip_network(entry, strict=False)))
            else:
                normalized.append(str(ipaddress.ip_address(entry)))
        except ValueError:
            raise ConfigError(f"{name}: {entry!r} is not an IP address or network") from None
    return tuple(normalized)


def dev_key(service: str) -> bytes:
    return hmac.new(DEV_SECRET.encode(), service.encode(), hashlib.sha256).digest()


def _service_keys() -> tuple[dict[str, bytes], bool]:
    """FANBANK_SERVICE_KEYS="edge:<secret>,gifts:<secret>,…" — one key per calling identity."""
    raw = _env("FANBANK_SERVICE_KEYS")
    if raw is None:
        names = (*DEFAULT_INTERNAL_CALLERS, *DEFAULT_USER_DELEGATES)
        return {name: dev_key(name) for name in names}, True
    keys: dict[str, bytes] = {}
    for item in raw.split(","):
        name, sep, secret = item.strip().partition(":")
        if not sep or not name or len(secret) < 16:
            raise ConfigError("FANBANK_SERVICE_KEYS items are name:secret with a secret of ≥ 16 characters")
        keys[name] = secret.encode()
    return keys, False


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None
    redis_url: str | None
    preset_name: str
    data_dir: Path
    host: str
    ports: dict[str, int]
    # Where each service is reached: FANBANK_<SERVICE>_ADDR, default host:port of this machine.
    addresses: dict[str, str]
    service_keys: dict[str, bytes]
    using_dev_keys: bool
    internal_callers: frozenset[str]
    user_delegates: frozenset[str]
    identity: str
    clock_mode: str
    db_pool_size: int
    log_level: str
    signature_ttl_seconds: int
    shutdown_grace_seconds: int
    wallet_batch_max: int
    wallet_committers: int
    wallet_hold_sweep_ms: int
    # Services' background work (Billing's metering tick, every intent sweeper) runs this often;
    # 0 runs none of it (tests drive it by hand on the controlled clock).
    background_ms: int
    # An intent left PENDING this long (a crash between the Wallet call and the outcome) is re-driven.
    sweep_after_seconds: int
    # Published outbox rows older than this (business time) are deleted; 0 keeps every row. Resume
    # tokens from before then answer RESUME_TOKEN_TOO_OLD.
    outbox_retention_hours: int
    # A scheduled stream not started this long after its scheduled start is cancelled by Streams and
    # its tickets refunded; 0 never does.
    streams_no_show_hours: int
    # Billing's metering: calls claimed per round, rounds in flight at once per process, and how long
    # every replica must have been silent before a process starting up records a Billing outage.
    billing_claim_chunk: int
    billing_rounds_in_flight: int
    billing_outage_after_seconds: int
    # LiveKit's webhook signing key pair (Billing verifies the media server's webhooks with it).
    livekit_api_key: str
    livekit_api_secret: str
    # The edge: users' bearer JWTs (HS256 with jwt_secret, or RS256 with jwt_public_key: PEM text or
    # @path), which claim carries the roles, browser origins allowed by CORS, request body bound.
    jwt_algorithm: str
    jwt_secret: str
    jwt_public_key: str | None
    jwt_audience: str
    jwt_issuer: str
    jwt_roles_claim: str
    cors_origins: tuple[str, ...]
    edge_max_body_bytes: int
    # Every gRPC server: RPCs in progress at once (live watches included; beyond it new calls get
    # RESOURCE_EXHAUSTED) and calls the server core may queue before the application takes them
    # (grpc's default of 1,000 would cancel a reconnect storm of thousands of watchers).
    grpc_max_concurrent_rpcs: int = 20_000
    grpc_max_pending_requests: int = 20_000
    # Servers per process on the one port (SO_REUSEPORT; shared/server.py "Accept loops"); both limits
    # above apply to each.
    grpc_accept_loops: int = 8
    # Streams: live WatchStream feeds per process (beyond it: RESOURCE_EXHAUSTED TOO_MANY_SUBSCRIBERS)
    # and each feed's queue of undelivered events per channel (full: the watcher is dropped).
    streams_max_watchers: int = 10_000
    streams_watch_queue: int = 256
    # The edge's rate limits (token buckets in Redis; none without FANBANK_REDIS_URL): requests a
    # second and burst per client IP and per user; a rate of 0 turns that limit off.
    edge_ip_rate_per_second: int = 100
    edge_ip_burst: int = 200
    edge_user_rate_per_second: int = 20
    edge_user_burst: int = 60
    # Proxies in front of the edge (IPs or CIDRs) whose X-Forwarded-For names the client: the
    # per-IP limit then counts the client, not the proxy. Empty: the TCP peer is the client.
    edge_trusted_proxies: tuple[str, ...] = ()

    def key_for(self, caller: str) -> bytes:
        try:
            return self.service_keys[caller]
        except KeyError:
            raise ConfigError(f"no service key configured for identity {caller!r}") from None


def load_settings() -> Settings:
    keys, dev = _service_keys()
    clock_mode = _env("FANBANK_CLOCK", "system")
    jwt_algorithm = _env("FANBANK_JWT_ALGORITHM", "HS256")
    if jwt_algorithm not in JWT_ALGORITHMS:
        raise ConfigError(f"FANBANK_JWT_ALGORITHM must be one of {', '.join(JWT_ALGORITHMS)}")
    if clock_mode not in ("system", "controlled"):
        raise ConfigError("FANBANK_CLOCK must be 'system' or 'controlled'")
    ports = {svc: _int(f"FANBANK_{svc.upper()}_PORT", port, 0, 65535) for svc, port in DEFAULT_PORTS.items()}
    ports["edge"] = _int("FANBANK_EDGE_PORT", 8080, 0, 65535)
    host = _env("FANBANK_HOST", "127.0.0.1")
    connect_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    addresses = {svc: _env(f"FANBANK_{svc.upper()}_ADDR", f"{connect_host}:{port}") for svc, port in ports.items()}
    return Settings(
        database_url=_env("FANBANK_DATABASE_URL"),
        redis_url=_env("FANBANK_REDIS_URL"),
        preset_name=_env("FANBANK_PRESET", "digis"),
        data_dir=Path(_env("FANBANK_DATA_DIR", str(REPO / ".data"))),
        host=host,
        ports=ports,
        addresses=addresses,
        service_keys=keys,
        using_dev_keys=dev,
        internal_callers=frozenset(_csv("FANBANK_INTERNAL_CALLERS", DEFAULT_INTERNAL_CALLERS)),
        user_delegates=frozenset(_csv("FANBANK_USER_DELEGATES", DEFAULT_USER_DELEGATES)),
        identity=_env("FANBANK_IDENTITY", "platform"),
        clock_mode=clock_mode,
        db_pool_size=_int("FANBANK_DB_POOL_SIZE", 8, 1, 200),
        log_level=_env("FANBANK_LOG_LEVEL", "INFO"),
        signature_ttl_seconds=_int("FANBANK_SIGNATURE_TTL_SECONDS", 60, 1, 3600),
        shutdown_grace_seconds=_int("FANBANK_SHUTDOWN_GRACE_SECONDS", 10, 0, 600),
        wallet_batch_max=_int("FANBANK_WALLET_BATCH_MAX", 500, 1, 5000),
        wallet_committers=_int("FANBANK_WALLET_COMMITTERS", 2, 1, 64),
        wallet_hold_sweep_ms=_int("FANBANK_WALLET_HOLD_SWEEP_MS", 1000, 10, 3_600_000),
        background_ms=_int("FANBANK_BACKGROUND_MS", 1000, 0, 3_600_000),
        sweep_after_seconds=_int("FANBANK_SWEEP_AFTER_SECONDS", 60, 1, 86_400),
        outbox_retention_hours=_int("FANBANK_OUTBOX_RETENTION_HOURS", 168, 0, 87_600),
        streams_no_show_hours=_int("FANBANK_STREAMS_NO_SHOW_HOURS", 24, 0, 8_760),
        # A metering round appends up to 3 events per claimed call in one outbox append, which takes
        # at most 10,000 (services/billing/metering.py EVENTS_PER_CALL).
        billing_claim_chunk=_int("FANBANK_BILLING_CLAIM_CHUNK", 2000, 1, 3000),
        billing_rounds_in_flight=_int("FANBANK_BILLING_ROUNDS_IN_FLIGHT", 3, 1, 64),
        billing_outage_after_seconds=_int("FANBANK_BILLING_OUTAGE_AFTER_SECONDS", 10, 1, 3600),
        livekit_api_key=_env("FANBANK_LIVEKIT_API_KEY", DEV_LIVEKIT_API_KEY),
        livekit_api_secret=_env("FANBANK_LIVEKIT_API_SECRET", DEV_LIVEKIT_API_SECRET),
        jwt_algorithm=jwt_algorithm,
        jwt_secret=_env("FANBANK_JWT_SECRET", DEV_JWT_SECRET),
        jwt_public_key=_env("FANBANK_JWT_PUBLIC_KEY"),
        jwt_audience=_env("FANBANK_JWT_AUDIENCE", "fanbank"),
        jwt_issuer=_env("FANBANK_JWT_ISSUER", "fanbank-dev"),
        jwt_roles_claim=_env("FANBANK_JWT_ROLES_CLAIM", "roles"),
        cors_origins=_csv("FANBANK_CORS_ORIGINS", ()),
        edge_max_body_bytes=_int("FANBANK_EDGE_MAX_BODY_BYTES", 64 * 1024, 1024, 4 * 1024 * 1024),
        grpc_max_concurrent_rpcs=_int("FANBANK_GRPC_MAX_CONCURRENT_RPCS", 20_000, 10, 1_000_000),
        grpc_max_pending_requests=_int("FANBANK_GRPC_MAX_PENDING_REQUESTS", 20_000, 100, 1_000_000),
        grpc_accept_loops=_int("FANBANK_GRPC_ACCEPT_LOOPS", 8, 1, 32),
        streams_max_watchers=_int("FANBANK_STREAMS_MAX_WATCHERS", 10_000, 1, 500_000),
        streams_watch_queue=_int("FANBANK_STREAMS_WATCH_QUEUE", 256, 100, 100_000),
        edge_ip_rate_per_second=_int("FANBANK_EDGE_IP_RATE_PER_SECOND", 100, 0, 1_000_000),
        edge_ip_burst=_int("FANBANK_EDGE_IP_BURST", 200, 1, 10_000_000),
        edge_user_rate_per_second=_int("FANBANK_EDGE_USER_RATE_PER_SECOND", 20, 0, 1_000_000),
        edge_user_burst=_int("FANBANK_EDGE_USER_BURST", 60, 1, 10_000_000),
        edge_trusted_proxies=_networks("FANBANK_EDGE_TRUSTED_PROXIES"),
    )
