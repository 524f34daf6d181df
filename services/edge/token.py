"""Prints a bearer JWT for calling the edge by hand, signed with this process's HS256 secret
(FANBANK_JWT_SECRET, or the development secret `make up` uses):

    python -m services.edge.token USER [ROLE,ROLE] [--ttl SECONDS]

With RS256 the edge holds only the public key; tokens come from your identity provider.
"""

from __future__ import annotations

import argparse
import sys
import time

import jwt

from shared.config import Settings, load_settings

MAX_TTL_SECONDS = 7 * 24 * 3600


def mint(settings: Settings, user: str, roles: tuple[str, ...] = (), ttl_seconds: int = 3600, now=None) -> str:
    if settings.jwt_algorithm != "HS256":
        raise SystemExit("only HS256 tokens can be minted here; RS256 tokens come from the identity provider")
    issued = int(now if now is not None else time.time())
    claims = {
        "sub": user,
        settings.jwt_roles_claim: list(roles),
        "aud": settings.jwt_audience,
        "iss": settings.jwt_issuer,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.edge.token", description=__doc__.split("\n")[0])
    parser.add_argument("user")
    parser.add_argument("roles", nargs="?", default="", help="comma-separated, e.g. admin,creator")
    parser.add_argument("--ttl", type=int, default=3600, help="seconds the token stays valid")
    args = parser.parse_args(argv)
    if not 1 <= args.ttl <= MAX_TTL_SECONDS:
        parser.error(f"--ttl must be 1..{MAX_TTL_SECONDS}")
    roles = tuple(r for r in args.roles.split(",") if r)
    print(mint(load_settings(), args.user, roles, args.ttl))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
