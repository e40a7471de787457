"""kafka.auth (SASL/OAUTHBEARER): the config shape, the three token providers, and the hand-over of one
token to both client kinds (librdkafka's ``oauth_cb``, aiokafka's token provider). No broker, no network:
the MSK signer and the OIDC endpoint are fakes here; the broker side is tests/integration/test_kafka_oauth.py.
"""

from __future__ import annotations

import base64
import json
import sys
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from regionguard.core.config import ConfigError, parse_config
from regionguard.core.kafka_auth import KafkaAuthConfig
from regionguard.core.kafka_security import kafka_security
from regionguard.core.oauth_aiokafka import AiokafkaTokenProvider
from regionguard.core.oauth_tokens import (
    Token, TokenError, TokenSource, jwt_subject, msk_iam_token, oidc_token, token_source, unsecured_jwt,
)
from regionguard.health.service import faust_credentials

GOOD = {
    "regions": {"eu": {"dsn": "postgresql://app@db-eu/app"}},
    "tables": {"users": {"key": ["id"], "version": "version"}},
}
SASL_SSL = {"security.protocol": "SASL_SSL"}
SECRET = "oidc-secret-do-not-print"
UNSECURED = {"mechanism": "oauthbearer", "token": {"provider": "unsecured_jwt", "principal": "rg", "scope": ["rg"]}}
MSK = {"mechanism": "oauthbearer", "token": {"provider": "msk_iam", "region": "eu-west-1"}}
OIDC = {"mechanism": "oauthbearer",
        "token": {"provider": "oidc", "token_endpoint_url": "https://idp.example/oauth2/token", "client_id": "rg",
                  "client_secret": SECRET, "scope": "kafka", "extensions": {"logicalCluster": "lkc-1"}}}


def cfg_with(auth: dict | None, client: dict | str | None = None):
    kafka: dict[str, Any] = {} if client == "omit" else {"client": SASL_SSL if client is None else client}
    if auth is not None:
        kafka["auth"] = auth
    return parse_config({**GOOD, "kafka": kafka})


def claims(jwt: str) -> tuple[dict, dict, str]:
    head, body, sig = jwt.split(".")
    dec = lambda part: json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))  # noqa: E731
    return dec(head), dec(body), sig


class FakeSigner:
    """The surface of aws_msk_iam_sasl_signer.MSKAuthTokenProvider that regionguard calls, recording the calls."""

    def __init__(self, token: str = "msk-signed-token", expiry_ms: int = 1_900_000_900_000) -> None:
        self.calls: list[tuple] = []
        self.token, self.expiry_ms = token, expiry_ms

    def generate_auth_token(self, region):
        self.calls.append(("default", region))
        return self.token, self.expiry_ms

    def generate_auth_token_from_profile(self, region, aws_profile):
        self.calls.append(("profile", region, aws_profile))
        return self.token, self.expiry_ms

    def generate_auth_token_from_role_arn(self, region, role_arn):
        self.calls.append(("role", region, role_arn))
        return self.token, self.expiry_ms


# ---- the config shape -----------------------------------------------------------------------------

def test_auth_sets_oauthbearer_and_one_oauth_cb_on_every_librdkafka_client():
    cfg = cfg_with(UNSECURED)
    a, b = cfg.kafka_client_conf(), cfg.kafka_client_conf(**{"group.id": "g"})
    assert a["security.protocol"] == "SASL_SSL" and a["sasl.mechanism"] == "OAUTHBEARER"
    assert a["oauth_cb"] == b["oauth_cb"] and a["oauth_cb"].__self__ is token_source(cfg.kafka.auth)
    assert "oauth_cb" not in cfg_with(None, {}).kafka_client_conf()  # no auth: nothing added


@pytest.mark.parametrize("auth, client, needle", [
    (UNSECURED, "omit", "kafka: kafka.auth needs 'security.protocol' SASL_SSL (or SASL_PLAINTEXT)"),
    (UNSECURED, {}, "kafka.client: kafka.auth needs 'security.protocol' SASL_SSL (or SASL_PLAINTEXT)"),
    (UNSECURED, {"security.protocol": "SSL"}, "kafka.client: kafka.auth needs 'security.protocol' SASL_SSL"),
    (UNSECURED, {**SASL_SSL, "sasl.mechanism": "PLAIN"}, "'sasl.mechanism' PLAIN contradicts kafka.auth"),
    (UNSECURED, {**SASL_SSL, "sasl.password": SECRET}, "'sasl.password' is not used with kafka.auth"),
    (None, {**SASL_SSL, "sasl.mechanism": "OAUTHBEARER"}, "OAUTHBEARER is configured in kafka.auth"),
    (None, {**SASL_SSL, "sasl.oauthbearer.method": "oidc"}, "'sasl.oauthbearer.method' is not supported: "
                                                            "configure OAUTHBEARER in kafka.auth"),
    ({"mechanism": "plain", "token": UNSECURED["token"]}, SASL_SSL, "kafka.auth.mechanism: Input should be"),
    ({"mechanism": "oauthbearer", "token": {"provider": "kerberos"}}, SASL_SSL, "kafka.auth.token: "),
    ({"mechanism": "oauthbearer", "token": {"provider": "unsecured_jwt"}}, SASL_SSL,
     "kafka.auth.token.unsecured_jwt.principal: required field is missing"),
    ({**MSK, "token": {**MSK["token"], "region": "Ireland"}}, SASL_SSL, "'Ireland' is not an AWS region name"),
    ({**MSK, "token": {**MSK["token"], "profile": "p", "role_arn": "arn:aws:iam::1:role/r"}}, SASL_SSL,
     "set one of profile and role_arn"),
    ({**OIDC, "token": {**OIDC["token"], "token_endpoint_url": "http://idp.example/token"}}, SASL_SSL,
     "must be https: the client secret would cross the network in clear text"),
    ({**OIDC, "token": {**OIDC["token"], "token_endpoint_url": "https://u:p@idp.example/token"}}, SASL_SSL,
     "must not hold credentials"),
    ({**OIDC, "token": {**OIDC["token"], "extensions": {"auth": "x"}}}, SASL_SSL, "extension key 'auth'"),
    ({**OIDC, "token": {**OIDC["token"], "client_secret": "${env:RG_TEST_UNSET_SECRET}"}}, SASL_SSL,
     "environment variable 'RG_TEST_UNSET_SECRET' is not set"),
])
def test_bad_auth_is_one_line_naming_the_field_and_no_secret(auth, client, needle, monkeypatch):
    monkeypatch.delenv("RG_TEST_UNSET_SECRET", raising=False)
    with pytest.raises(ConfigError) as exc:
        cfg_with(auth, client)
    msg = str(exc.value)
    assert needle in msg and "\n" not in msg and SECRET not in msg, msg


def test_the_client_secret_comes_from_the_environment_and_never_shows(monkeypatch):
    monkeypatch.setenv("RG_OIDC_SECRET", SECRET)
    cfg = cfg_with({**OIDC, "token": {**OIDC["token"], "client_secret": "${env:RG_OIDC_SECRET}"}})
    assert cfg.kafka.auth.token.client_secret.get_secret_value() == SECRET
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.kafka.auth) and SECRET not in cfg.model_dump_json()


def test_http_token_endpoint_is_allowed_on_loopback_only():
    cfg = cfg_with({**OIDC, "token": {**OIDC["token"], "token_endpoint_url": "http://127.0.0.1:8080/token"}})
    assert cfg.kafka.auth.token.token_endpoint_url == "http://127.0.0.1:8080/token"


def test_msk_iam_without_the_extra_is_one_line_saying_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "aws_msk_iam_sasl_signer", None)  # import fails as if not installed
    with pytest.raises(ConfigError) as exc:
        cfg_with(MSK)
    assert str(exc.value) == ("config: kafka.auth.token.msk_iam: provider msk_iam needs the "
                              "aws-msk-iam-sasl-signer-python package: pip install 'regionguard[msk]'")


def test_kafka_security_reports_oauthbearer_with_tls_kept():
    sec = kafka_security({"security.protocol": "sasl_ssl"}, oauthbearer=True)
    assert (sec.protocol, sec.mechanism, sec.username, sec.password) == ("SASL_SSL", "OAUTHBEARER", None, None)
    assert sec.tls is not None
    assert kafka_security({"security.protocol": "SASL_PLAINTEXT"}, oauthbearer=True).tls is None


# ---- the providers -----------------------------------------------------------------------------------

def test_unsecured_jwt_is_what_kafkas_unsecured_validator_reads():
    tok = KafkaAuthConfig.model_validate({"mechanism": "oauthbearer", "token": {
        "provider": "unsecured_jwt", "principal": "rg-services", "scope": ["regionguard", "x"], "lifetime_s": 600}})
    token = unsecured_jwt(tok.token, now=1_700_000_000.5)
    head, body, sig = claims(token.value)
    assert head == {"alg": "none"} and sig == ""
    assert body == {"sub": "rg-services", "iat": 1_700_000_000, "exp": 1_700_000_600, "scope": ["regionguard", "x"]}
    assert (token.expires_at, token.principal) == (1_700_000_600.0, "rg-services")
    assert jwt_subject(token.value) == "rg-services" and jwt_subject("opaque-token") is None


def _oidc(**extra):
    return KafkaAuthConfig.model_validate({**OIDC, "token": {**OIDC["token"], **extra}}).token


def _post(status: int, body: Any, seen: list):
    def post(url, **kw):
        seen.append((url, kw))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, request=httpx.Request("POST", url))
    return post


def test_oidc_is_a_client_credentials_grant_and_keeps_the_subject():
    seen: list = []
    jwt = unsecured_jwt(KafkaAuthConfig.model_validate(UNSECURED).token, 0).value  # any JWT with a sub
    token = oidc_token(_oidc(), 1000.0, post=_post(200, {"access_token": jwt, "expires_in": 300}, seen))
    url, kw = seen[0]
    assert url == "https://idp.example/oauth2/token"
    assert kw["data"] == {"grant_type": "client_credentials", "scope": "kafka"}
    assert kw["auth"] == ("rg", SECRET) and kw["timeout"] == 10.0
    assert (token.value, token.expires_at, token.principal) == (jwt, 1300.0, "rg")


@pytest.mark.parametrize("status, body, needle", [
    (401, {"error": "invalid_client"}, "answered HTTP 401"),
    (200, b"<html>", "answered something that is not JSON"),
    (200, {"expires_in": 300}, "answered without an access_token"),
    (200, {"access_token": "t", "expires_in": "soon"}, "answered without a positive expires_in"),
])
def test_oidc_failures_are_one_line_without_the_secret(status, body, needle):
    with pytest.raises(TokenError) as exc:
        oidc_token(_oidc(), 0.0, post=_post(status, body, []))
    msg = str(exc.value)
    assert msg.startswith("OIDC token endpoint https://idp.example/oauth2/token") and needle in msg
    assert SECRET not in msg and "\n" not in msg


def test_oidc_network_failure_is_named_by_type():
    def post(url, **kw):
        raise httpx.ConnectError("connection refused", request=httpx.Request("POST", url))
    with pytest.raises(TokenError, match=r"oauth2/token: ConnectError$"):
        oidc_token(_oidc(), 0.0, post=post)


@pytest.mark.parametrize("extra, call", [
    ({}, ("default", "eu-west-1")),
    ({"profile": "kafka"}, ("profile", "eu-west-1", "kafka")),
    ({"role_arn": "arn:aws:iam::123:role/rg"}, ("role", "eu-west-1", "arn:aws:iam::123:role/rg")),
])
def test_msk_iam_asks_the_signer_for_the_region_and_keeps_its_expiry(extra, call):
    signer = FakeSigner()
    tok = KafkaAuthConfig.model_validate({**MSK, "token": {**MSK["token"], **extra}}).token
    token = msk_iam_token(tok, 5.0, signer=signer)
    assert signer.calls == [call]
    assert (token.value, token.expires_at) == ("msk-signed-token", 1_900_000_900.0)


def test_msk_iam_signer_failure_is_one_line_by_type():
    from botocore.exceptions import NoCredentialsError

    class NoCreds(FakeSigner):
        def generate_auth_token(self, region):
            raise NoCredentialsError()
    with pytest.raises(TokenError, match=r"^MSK IAM signer \(eu-west-1\): NoCredentialsError$"):
        msk_iam_token(KafkaAuthConfig.model_validate(MSK).token, 0.0, signer=NoCreds())


def test_the_real_msk_signer_is_called_as_regionguard_calls_it(monkeypatch):
    """The library itself, with static credentials from the environment: signing is local, no network."""
    pytest.importorskip("aws_msk_iam_sasl_signer")
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREGIONGUARDTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    token = msk_iam_token(KafkaAuthConfig.model_validate(MSK).token, 0.0)
    url = base64.urlsafe_b64decode(token.value + "=" * (-len(token.value) % 4)).decode()
    assert url.startswith("https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect")
    assert "AKIAREGIONGUARDTEST" in url and "not-a-real-secret" not in url
    assert token.expires_at > 0


# ---- one token for both client kinds ------------------------------------------------------------------

def _msk_source(signer: FakeSigner, clock) -> TokenSource:
    auth = KafkaAuthConfig.model_validate(MSK)
    return TokenSource(auth, clock=clock, fetch=lambda now: msk_iam_token(auth.token, now, signer=signer))


async def test_the_msk_token_and_expiry_reach_librdkafka_and_aiokafka_alike():
    signer = FakeSigner(expiry_ms=1_000_900_000)
    source = _msk_source(signer, clock=lambda: 1_000_000.0)
    value, expiry, principal, extensions = source.oauth_cb("")  # what confluent-kafka gets
    assert (value, expiry, principal, extensions) == ("msk-signed-token", 1_000_900.0, "msk-iam", {})
    provider = AiokafkaTokenProvider(source)  # what aiokafka gets
    assert await provider.token() == "msk-signed-token" and provider.extensions() == {}
    assert signer.calls == [("default", "eu-west-1")]  # one signing served both


def test_a_token_is_reused_while_half_its_life_is_left_then_fetched_again():
    now = [0.0]
    fetched: list[float] = []

    def fetch(at: float) -> Token:
        fetched.append(at)
        return Token(f"t{len(fetched)}", at + 100.0, "p", at)
    source = TokenSource(KafkaAuthConfig.model_validate(UNSECURED), clock=lambda: now[0], fetch=fetch)
    assert source.get().value == "t1"
    now[0] = 49.0
    assert source.get().value == "t1"
    now[0] = 80.0  # librdkafka asks again at 80% of the lifetime: a new token, not the old one
    assert source.get().value == "t2" and fetched == [0.0, 80.0]


def test_a_failed_fetch_raises_to_librdkafka_and_is_remembered_for_the_start_line():
    def fetch(at: float) -> Token:
        raise TokenError("OIDC token endpoint https://idp.example/t answered HTTP 503")
    source = TokenSource(KafkaAuthConfig.model_validate(UNSECURED), clock=lambda: 0.0, fetch=fetch)
    with pytest.raises(TokenError):
        source.oauth_cb(None)
    assert str(source.last_error) == "OIDC token endpoint https://idp.example/t answered HTTP 503"


def test_oidc_extensions_go_to_both_clients():
    source = TokenSource(KafkaAuthConfig.model_validate(OIDC), clock=lambda: 0.0,
                         fetch=lambda at: Token("tok", 100.0, "rg", at))
    assert source.oauth_cb("")[3] == {"logicalCluster": "lkc-1"}
    assert AiokafkaTokenProvider(source).extensions() == {"logicalCluster": "lkc-1"}


def test_the_health_service_election_gets_the_same_token_source():
    from faust.auth import OAuthCredentials
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    cfg = cfg_with(UNSECURED)
    creds = faust_credentials(cfg)
    assert isinstance(creds, OAuthCredentials)
    kw = credentials_to_aiokafka_auth(creds)  # faust's own mapping to aiokafka's keyword arguments
    assert kw["security_protocol"] == "SASL_SSL" and kw["sasl_mechanism"] == "OAUTHBEARER"
    assert kw["sasl_oauth_token_provider"].source is cfg.kafka_client_conf()["oauth_cb"].__self__
    plain = cfg_with(UNSECURED, {"security.protocol": "SASL_PLAINTEXT"})
    assert credentials_to_aiokafka_auth(faust_credentials(plain))["security_protocol"] == "SASL_PLAINTEXT"


def test_tokens_and_secrets_stay_out_of_reprs():
    token = Token("secret-token-value", 1.0, "p", 0.0)
    assert "secret-token-value" not in repr(token)
    assert SECRET not in repr(SimpleNamespace(auth=KafkaAuthConfig.model_validate(OIDC)))


# ---- start-up: the token first, within kafka.startup_timeout_s ------------------------------------------

def _failing(monkeypatch, error: TokenError):
    from regionguard.core import oauth_tokens

    cfg = cfg_with(OIDC)
    calls: list[float] = []

    def fetch(at: float) -> Token:
        calls.append(at)
        raise error
    source = TokenSource(cfg.kafka.auth, fetch=fetch)
    monkeypatch.setattr(oauth_tokens, "token_source", lambda auth: source)
    return cfg, calls


def test_a_provider_that_refuses_ends_the_start_at_once_with_one_line(monkeypatch):
    from regionguard.core.startup import KafkaAuthRefused, wait_for_kafka_blocking
    from regionguard.core.oauth_tokens import TokenRefused

    cfg, calls = _failing(monkeypatch, TokenRefused("OIDC token endpoint https://idp.example/oauth2/token "
                                                    "answered HTTP 401"))
    with pytest.raises(KafkaAuthRefused) as exc:
        wait_for_kafka_blocking(cfg, "router")
    assert str(exc.value) == ("Kafka at 127.0.0.1:9092: no token from kafka.auth (oidc): OIDC token endpoint "
                              "https://idp.example/oauth2/token answered HTTP 401")
    assert len(calls) == 1


def test_a_provider_out_of_reach_is_waited_for_with_one_line(monkeypatch, caplog):
    from regionguard.core.startup import wait_for_kafka_blocking

    cfg, calls = _failing(monkeypatch, TokenError("OIDC token endpoint https://idp.example/oauth2/token: "
                                                  "ConnectError"))
    # a signal comes right after the first attempt: no pause is slept
    assert wait_for_kafka_blocking(cfg, "router", stopped=lambda: bool(calls)) is False
    assert len(calls) == 1
    assert [r.getMessage() for r in caplog.records] == [
        "router: waiting for a token from kafka.auth (oidc): OIDC token endpoint "
        "https://idp.example/oauth2/token: ConnectError"]
