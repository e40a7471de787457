"""Every service on an Apache Kafka that lets clients in only with an OAUTHBEARER token (issue 28, item 4).

Its own broker (module-scoped, so the rest of the suite keeps the session
broker): a PLAINTEXT listener for the test's own checks, and a SASL_PLAINTEXT
listener with OAUTHBEARER only, validated by Kafka's default unsecured JWT
validator, which here requires the scope ``regionguard``. The config's
``kafka.bootstrap`` names the OAUTHBEARER listener only, so a router, a
replayer and a health process (real processes) work only if both client kinds
(librdkafka's ``oauth_cb`` and faust/aiokafka's token provider) present the
token that ``kafka.auth`` describes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from regionguard.core.kafka import replayer_group, router_group
from regionguard_testkit.embedded.kafka import ApacheKafka
from tests.harness import free_port, make_config
from tests.integration.helpers import (
    ev_bytes, produce_raw, read_json, wait_group, wait_metric, wait_until, write_event,
)

pytestmark = [pytest.mark.timeout(240),
              pytest.mark.skipif(bool(os.environ.get("KAFKA_BOOTSTRAP")),
                                 reason="needs its own Apache Kafka with an OAUTHBEARER listener ($KAFKA_BOOTSTRAP is set)")]

SCOPE = "regionguard"
VALIDATOR_JAAS = ("org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
                  f'unsecuredLoginStringClaim_sub="broker" unsecuredValidatorRequiredScope="{SCOPE}";')
#: base64url of {"alg":"none"}: the start of every token this test's services present
TOKEN_HEADER = "eyJhbGciOiJub25lIn0"


class OAuthKafka:
    """One Apache Kafka node: PLAINTEXT for the test, SASL_PLAINTEXT with OAUTHBEARER (unsecured JWTs) for the services."""

    def __init__(self) -> None:
        self.kafka = ApacheKafka(1)
        node = self.kafka.nodes[0]
        self.plaintext = node.address
        self.oauth = f"{node.host}:{free_port(node.host)}"
        client = f"PLAINTEXT://{node.address},SASL_PLAINTEXT://{self.oauth}"
        self.kafka.broker_config.update({
            "listeners": f"{client},CONTROLLER://{node.host}:{node.controller_port}",
            "advertised.listeners": client,
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
            "sasl.enabled.mechanisms": "OAUTHBEARER",
            # no callback handler configured: Kafka's OAuthBearerUnsecuredValidatorCallbackHandler
            "listener.name.sasl_plaintext.oauthbearer.sasl.jaas.config": VALIDATOR_JAAS,
        })


@pytest.fixture(scope="module")
def oauth_kafka():
    k = OAuthKafka()
    k.kafka.start()
    try:
        yield k
    finally:
        k.kafka.close()


def auth(principal: str = "rg-services", scope: list[str] | None = None) -> dict:
    return {"mechanism": "oauthbearer",
            "token": {"provider": "unsecured_jwt", "principal": principal,
                      "scope": [SCOPE] if scope is None else scope}}


def oauth_overrides(**kafka) -> dict:
    return {"kafka": {"client": {"security.protocol": "SASL_PLAINTEXT"}, "auth": auth(), **kafka},
            "health": {"leader_session_timeout_s": 6.0}}


def test_the_listener_refuses_a_client_without_a_token(oauth_kafka):
    """The premise: nothing gets metadata from the OAUTHBEARER listener without a token."""
    admin = AdminClient({"bootstrap.servers": oauth_kafka.oauth, "socket.timeout.ms": 2000, "log_level": 0})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)


def test_router_replayer_and_health_work_over_oauthbearer(oauth_kafka, regions, services, tmp_path):
    lr = regions(["eu"])
    # the topics are created through the OAUTHBEARER listener too (this process's oauth_cb)
    cf = make_config(lr, oauth_kafka.oauth, tmp_path / "oauth.yaml", partitions=1, overrides=oauth_overrides())
    cfg = cf.load()
    health_port, router_port = free_port(), free_port()
    health = services("health", ["health", "--config", str(cf.path), "--observer", "h1",
                                 "--metrics-port", str(health_port)])
    router = services("router", cf.cli_args("router", "--metrics-port", str(router_port)))
    replayer = services("replayer", cf.cli_args("replayer"))

    # faust's election group and both consumer groups, seen through the PLAINTEXT listener:
    # every member came in over OAUTHBEARER
    wait_group(oauth_kafka.plaintext, f"{cfg.kafka.topic_prefix}health", members=1, timeout=60,
               what="the health instance in the leader election (aiokafka)")
    wait_metric(health_port, "regionguard_health_leader", lambda v: v == 1, timeout=30, what="h1 the leader")
    wait_until(lambda: any(s.get("region") == "eu" and s.get("state") == "closed" and s.get("observer") == "h1"
                           for s in read_json(oauth_kafka.plaintext, cf.topic("region-state"), idle=0.5)),
               timeout=30, what="eu closed, published by h1 (librdkafka producer)")
    wait_group(oauth_kafka.plaintext, router_group(cfg, "eu"), topic=cf.topic("writes", "eu"), partitions=1,
               members=cfg.router.lanes, timeout=60, what="the router's lanes own writes.eu")
    wait_group(oauth_kafka.plaintext, replayer_group(cfg, "eu"), topic=cf.topic("held", "eu"), partitions=1,
               members=cfg.replay.lanes, timeout=60, what="the replayer's lanes own held.eu")

    ev = write_event("eu", "users", "upsert", {"id": 7}, {"name": "over-oauth", "version": 1})
    produce_raw(oauth_kafka.plaintext, cf.topic("writes", "eu"), [ev_bytes(ev)])
    wait_until(lambda: lr.count("eu", "users") == 1, timeout=30, what="the write applied by the router")
    wait_metric(router_port, "regionguard_writes_applied_total", lambda v: v == 1, timeout=10,
                what="the router counts it applied")

    for proc in (health, router, replayer):
        assert proc.alive, proc.log_tail()
        assert TOKEN_HEADER not in proc.log_text(), f"{proc.name} logged a token"


@pytest.mark.parametrize("case", ["no kafka.auth", "token without the scope"])
def test_a_service_refused_by_the_broker_exits_2_with_one_line(case, oauth_kafka, regions, tmp_path):
    lr = regions(["eu"], schema=None)
    if case == "no kafka.auth":
        overrides = {"kafka": {"startup_timeout_s": 3}}
        expect = "did not answer within 3 s"  # a PLAINTEXT client gets no answer from a SASL listener
    else:
        overrides = oauth_overrides(auth=auth(scope=[]), startup_timeout_s=60)
        expect = "refused authentication"  # at once, with the broker's reason, not after 60 s
    cf = make_config(lr, oauth_kafka.oauth, tmp_path / "refused.yaml", partitions=1, create_topics=False,
                     overrides=overrides)
    proc = subprocess.run([sys.executable, "-m", "regionguard.cli", *cf.cli_args("router")],
                          capture_output=True, text=True, timeout=90)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, lines
    assert "Traceback" not in proc.stderr and not any(line.startswith("%") for line in lines), lines
    assert len(lines) <= 3, lines
    assert lines[-1].startswith(f"regionguard router: Kafka at {oauth_kafka.oauth}") and expect in lines[-1], lines
    if case == "token without the scope":
        assert "insufficient_scope" in lines[-1], lines
        assert "waiting for Kafka" not in proc.stderr, lines
    assert TOKEN_HEADER not in proc.stdout + proc.stderr


# ---- a generic OIDC provider: a client-credentials token endpoint on loopback ---------------------

OIDC_CLIENT, OIDC_SECRET = "rg-oidc-client", "oidc-secret-for-the-test"


class TokenEndpoint:
    """An OAuth 2 token endpoint (client credentials, HTTP Basic) that issues JWTs the broker's unsecured
    validator accepts: the OIDC path end to end, from our request to the broker's check of the token."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        endpoint = self
        self.grants: list[dict] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                from urllib.parse import parse_qs

                body = parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                basic = base64.b64encode(f"{OIDC_CLIENT}:{OIDC_SECRET}".encode()).decode()
                ok = self.headers.get("Authorization") == f"Basic {basic}" and \
                    body.get("grant_type") == ["client_credentials"]
                endpoint.grants.append({"ok": ok, "scope": body.get("scope")})
                now = int(time.time())
                claims = {"sub": OIDC_CLIENT, "iat": now, "exp": now + 3600, "scope": [SCOPE]}
                token = ".".join(base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()
                                 for part in ({"alg": "none"}, claims)) + "."
                answer = {"access_token": token, "token_type": "Bearer", "expires_in": 3600} if ok \
                    else {"error": "invalid_client"}
                data = json.dumps(answer).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/oauth2/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_endpoint():
    ep = TokenEndpoint()
    try:
        yield ep
    finally:
        ep.close()


def oidc_auth(url: str) -> dict:
    return {"mechanism": "oauthbearer",
            "token": {"provider": "oidc", "token_endpoint_url": url, "client_id": OIDC_CLIENT,
                      "client_secret": "${env:RG_TEST_OIDC_SECRET}", "scope": "kafka"}}


def test_health_leads_and_publishes_with_an_oidc_token(oauth_kafka, token_endpoint, regions, services, tmp_path,
                                                        monkeypatch):
    monkeypatch.setenv("RG_TEST_OIDC_SECRET", OIDC_SECRET)  # the test's config load and the process's
    lr = regions(["eu"], schema=None)
    cf = make_config(lr, oauth_kafka.oauth, tmp_path / "oidc.yaml", partitions=1,
                     overrides=oauth_overrides(auth=oidc_auth(token_endpoint.url)))
    cfg = cf.load()
    port = free_port()
    health = services("health-oidc", ["health", "--config", str(cf.path), "--observer", "h1",
                                      "--metrics-port", str(port)])
    wait_group(oauth_kafka.plaintext, f"{cfg.kafka.topic_prefix}health", members=1, timeout=60,
               what="the health instance in the leader election (aiokafka, OIDC token)")
    wait_metric(port, "regionguard_health_leader", lambda v: v == 1, timeout=30, what="h1 the leader")
    wait_until(lambda: any(s.get("region") == "eu" and s.get("state") == "closed"
                           for s in read_json(oauth_kafka.plaintext, cf.topic("region-state"), idle=0.5)),
               timeout=30, what="eu closed, published over OIDC (librdkafka)")
    assert token_endpoint.grants and all(g == {"ok": True, "scope": ["kafka"]} for g in token_endpoint.grants)
    # one process, one token source: not a grant per client (it has several librdkafka clients and aiokafka's)
    assert len(token_endpoint.grants) <= 2, token_endpoint.grants
    assert health.alive, health.log_tail()
    assert OIDC_SECRET not in health.log_text() and TOKEN_HEADER not in health.log_text()


def test_a_refused_oidc_client_exits_2_with_the_endpoints_answer(oauth_kafka, token_endpoint, regions, tmp_path,
                                                                 monkeypatch):
    monkeypatch.setenv("RG_TEST_OIDC_SECRET", "not-the-secret")
    lr = regions(["eu"], schema=None)
    cf = make_config(lr, oauth_kafka.oauth, tmp_path / "oidc-bad.yaml", partitions=1, create_topics=False,
                     overrides=oauth_overrides(auth=oidc_auth(token_endpoint.url)))
    proc = subprocess.run([sys.executable, "-m", "regionguard.cli", *cf.cli_args("router")],
                          capture_output=True, text=True, timeout=90)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode == 2, lines
    assert "Traceback" not in proc.stderr and len(lines) <= 3, lines
    assert lines[-1] == (f"regionguard router: Kafka at {oauth_kafka.oauth}: no token from kafka.auth (oidc): "
                         f"OIDC token endpoint {token_endpoint.url} answered HTTP 401"), lines
    assert "waiting" not in proc.stderr, lines  # a refusal is not waited for
    assert "not-the-secret" not in proc.stdout + proc.stderr
