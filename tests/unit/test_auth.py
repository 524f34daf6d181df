import dataclasses

import pytest

from shared import auth
from shared.config import ConfigError, load_settings
from shared.errors import DomainError


@pytest.fixture
def settings():
    return load_settings()


def _meta(pairs):
    return dict(pairs)


def test_service_call_verifies(settings):
    md = auth.sign(settings.key_for("gifts"), "gifts", "/m")
    principal = auth.verify(settings, _meta(md), "/m")
    assert principal.is_service and principal.caller == "gifts" and principal.user is None


def test_user_from_delegate(settings):
    md = auth.sign(settings.key_for("edge"), "edge", "/m", user="fan1", roles=("admin",))
    principal = auth.verify(settings, _meta(md), "/m")
    assert principal.user == "fan1" and principal.is_admin and not principal.is_service


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda md: {}, "UNSIGNED_CALL"),
        (lambda md: {**md, auth.SIGNATURE: "0" * 64}, "BAD_SIGNATURE"),
        (lambda md: {**md, auth.USER: "someone-else"}, "BAD_SIGNATURE"),
        (lambda md: {**md, auth.ROLES: "admin"}, "BAD_SIGNATURE"),
        (lambda md: {**md, auth.CALLER: "stranger"}, "UNKNOWN_CALLER"),
    ],
)
def test_tampering_is_refused(settings, mutate, reason):
    md = _meta(auth.sign(settings.key_for("edge"), "edge", "/m", user="fan1"))
    with pytest.raises(DomainError) as error:
        auth.verify(settings, mutate(md), "/m")
    assert error.value.reason == reason


def test_signature_is_bound_to_method(settings):
    md = _meta(auth.sign(settings.key_for("gifts"), "gifts", "/a"))
    with pytest.raises(DomainError) as error:
        auth.verify(settings, md, "/b")
    assert error.value.reason == "BAD_SIGNATURE"


def test_expired(settings):
    md = _meta(auth.sign(settings.key_for("gifts"), "gifts", "/m", ttl_seconds=1, now=1000))
    with pytest.raises(DomainError) as error:
        auth.verify(settings, md, "/m", now=1002)
    assert error.value.reason == "SIGNATURE_EXPIRED"


def test_user_metadata_from_non_delegate(settings):
    md = _meta(auth.sign(settings.key_for("gifts"), "gifts", "/m", user="fan1", roles=("admin",)))
    with pytest.raises(DomainError) as error:
        auth.verify(settings, md, "/m")
    assert error.value.reason == "CALLER_MAY_NOT_ACT_FOR_USERS"


def test_the_edge_alone_is_an_anonymous_visitor_not_a_service(settings):
    md = _meta(auth.sign(settings.key_for("edge"), "edge", "/m"))
    who = auth.verify(settings, md, "/m")
    assert who.is_anonymous and not who.is_service and not who.is_privileged and who.user is None
    with pytest.raises(DomainError) as error:
        auth.require_service(who, "X")
    assert error.value.reason == "SERVICE_ONLY"
    auth.require_service_or_anonymous(who, "a webhook")  # its own signature authorizes it
    user = auth.verify(settings, _meta(auth.sign(settings.key_for("edge"), "edge", "/m", user="u1")), "/m")
    with pytest.raises(DomainError):
        auth.require_service_or_anonymous(user, "a webhook")


def test_a_caller_neither_internal_nor_a_delegate_needs_a_user(settings):
    outsider = dataclasses.replace(settings, user_delegates=frozenset({"platform"}))
    md = _meta(auth.sign(settings.key_for("edge"), "edge", "/m"))
    with pytest.raises(DomainError) as error:
        auth.verify(outsider, md, "/m")
    assert error.value.reason == "CALLER_NOT_INTERNAL"


def test_configured_keys(monkeypatch):
    monkeypatch.setenv("FANBANK_SERVICE_KEYS", "edge:0123456789abcdef0123,gifts:fedcba9876543210fedc")
    settings = load_settings()
    assert not settings.using_dev_keys
    md = _meta(auth.sign(b"0123456789abcdef0123", "edge", "/m", user="u"))
    assert auth.verify(dataclasses.replace(settings), md, "/m").user == "u"


def test_trusted_proxies_are_checked_and_normalized(monkeypatch):
    monkeypatch.setenv("FANBANK_EDGE_TRUSTED_PROXIES", "10.1.2.3/8, 192.0.2.7,2001:db8::/32")
    assert load_settings().edge_trusted_proxies == ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32")
    monkeypatch.setenv("FANBANK_EDGE_TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal")
    with pytest.raises(ConfigError, match="proxy.internal"):
        load_settings()
