"""Settings whose bounds come from a limit elsewhere in the code."""

import pytest

from services.billing.metering import EVENTS_PER_CALL
from shared.config import ConfigError, load_settings
from shared.outbox import MAX_EVENTS_PER_APPEND


def test_a_metering_round_can_never_outgrow_one_outbox_append(monkeypatch):
    """The claim chunk's bound: a round appends up to EVENTS_PER_CALL events per call in one append."""
    monkeypatch.setenv("FANBANK_BILLING_CLAIM_CHUNK", "3000")
    assert load_settings().billing_claim_chunk * EVENTS_PER_CALL <= MAX_EVENTS_PER_APPEND
    monkeypatch.setenv("FANBANK_BILLING_CLAIM_CHUNK", "3001")
    with pytest.raises(ConfigError, match="FANBANK_BILLING_CLAIM_CHUNK"):
        load_settings()
