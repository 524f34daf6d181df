"""Prints signed call metadata as grpcurl `-H` flags, for calling a service by hand:

    python -m shared.sign IDENTITY METHOD [USER [ROLE,ROLE]]

It uses this process's configured keys (FANBANK_SERVICE_KEYS, or the development keys).
"""

from __future__ import annotations

import shlex
import sys

from shared.auth import sign
from shared.config import load_settings


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    identity, method = argv[0], argv[1]
    user = argv[2] if len(argv) > 2 else None
    roles = tuple(r for r in argv[3].split(",") if r) if len(argv) > 3 else ()
    settings = load_settings()
    metadata = sign(settings.key_for(identity), identity, method, user, roles, settings.signature_ttl_seconds)
    print(" ".join(f"-H {shlex.quote(f'{k}: {v}')}" for k, v in metadata))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
