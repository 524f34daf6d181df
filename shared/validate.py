"""Validation every service applies the same way: ids that callers choose.

Ids are identifiers, never text a user wrote, so the ledger and every service's tables can index
them and log them safely.
"""

from __future__ import annotations

import re

from shared.errors import invalid

MAX_ID_CHARS = 128
IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-/]*")


def check_id(name: str, value: str) -> str:
    if not value:
        raise invalid("MISSING_ID", f"{name} is required", field=name)
    if len(value) > MAX_ID_CHARS or not IDENT.fullmatch(value):
        raise invalid("INVALID_ID", f"{name} must be ≤ {MAX_ID_CHARS} characters of [A-Za-z0-9_.:-/]", field=name)
    return value
