"""kafka.client security settings -> faust/aiokafka: core's one translation (issue 14, item 4).

No broker: TLS is checked with in-memory handshakes (``ssl.MemoryBIO``) between
the translated client context and a server context built from the test
certificates in ``tests/data/kafka_tls`` (``make.sh`` there made them); SASL
is checked on the keyword arguments faust really hands to aiokafka.
"""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from regionguard.core.config import ConfigError, parse_config
from regionguard.core.kafka_security import KafkaSecurity, TlsSettings, kafka_security
from regionguard.health.service import faust_credentials

TLS = Path(__file__).resolve().parents[1] / "data" / "kafka_tls"
CA, CLIENT_CERT, CLIENT_KEY = str(TLS / "ca.pem"), str(TLS / "client.pem"), str(TLS / "client.key")
CLIENT_KEY_ENCRYPTED, KEY_PASSWORD = str(TLS / "client-encrypted.key"), "fixture-pass"
SECRET = "hunter2-do-not-print"
GOOD = {
    "regions": {"eu": {"dsn": "postgresql://app@db-eu/app"}},
    "tables": {"users": {"key": ["id"], "version": "version"}},
}
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def cfg_with(client: dict[str, Any]):
    return parse_config({**GOOD, "kafka": {"client": client}})


def aiokafka_kwargs(client: dict[str, Any]) -> dict[str, Any]:
    """What faust passes to aiokafka's clients for this ``kafka.client`` (faust's own mapping, not ours)."""
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    return credentials_to_aiokafka_auth(faust_credentials(cfg_with(client)))


def server_context(*, client_cert: bool = False) -> ssl.SSLContext:
    """The broker's side: broker.test / 127.0.0.1, signed by the test CA; optionally demanding a client cert."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(TLS / "broker.pem"), str(TLS / "broker.key"))
    if client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(CA)
    return ctx


def handshake(client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, hostname: str = "broker.test"):
    """A full TLS handshake in memory; raises the first side's ssl.SSLError. Returns (client, server)."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side, out, peer_in in (("client", client, c_out, s_in), ("server", server, s_out, c_in)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            # TLS 1.3: the server judges the client's certificate after the client is done; one more
            # exchange lets a refusal reach the client too
            client.write(b"x")
            s_in.write(c_out.read())
            assert server.read(1) == b"x"
            return client, server
    raise AssertionError("handshake did not finish")


def subject_cn(cert: dict) -> str:
    return dict(x[0] for x in cert["subject"])["commonName"]


# ---- PLAINTEXT -------------------------------------------------------------------------------

@pytest.mark.parametrize("client", [{}, {"security.protocol": "PLAINTEXT"}, {"security.protocol": "plaintext"},
                                    {"linger.ms": 5}])
def test_plaintext_has_no_credentials(client):
    assert kafka_security(client) == KafkaSecurity(protocol="PLAINTEXT")
    assert faust_credentials(cfg_with(client)) is None
    assert aiokafka_kwargs(client) == {"security_protocol": "PLAINTEXT"}


def test_plaintext_ignores_ssl_files_like_librdkafka():
    # librdkafka reads no ssl.* file under PLAINTEXT; neither do we (the file does not exist)
    client = {"security.protocol": "PLAINTEXT", "ssl.ca.location": "/nonexistent/ca.pem"}
    assert kafka_security(client).tls is None and faust_credentials(cfg_with(client)) is None


# ---- SSL ---------------------------------------------------------------------------------------

def test_ssl_with_a_ca_verifies_the_broker_and_its_name():
    client = {"security.protocol": "ssl", "ssl.ca.location": CA}
    sec = kafka_security(client)
    assert sec.protocol == "SSL" and sec.mechanism is None
    assert sec.tls == TlsSettings(ca_location=CA, verify_certificate=True, check_hostname=True)
    kw = aiokafka_kwargs(client)
    assert kw["security_protocol"] == "SSL"
    ctx = kw["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname is True
    assert [subject_cn(c) for c in ctx.get_ca_certs()] == ["regionguard test CA"]
    client_side, _ = handshake(ctx, server_context())
    assert subject_cn(client_side.getpeercert()) == "regionguard test broker"
    with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"):
        handshake(ctx, server_context(), hostname="elsewhere.test")


def test_ssl_without_the_ca_refuses_the_broker():
    ctx = aiokafka_kwargs({"security.protocol": "SSL"})["ssl_context"]  # the system's CAs only
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ctx, server_context())


def test_ssl_ca_pem_inline():
    client = {"security.protocol": "SSL", "ssl.ca.pem": Path(CA).read_text()}
    ctx = aiokafka_kwargs(client)["ssl_context"]
    assert [subject_cn(c) for c in ctx.get_ca_certs()] == ["regionguard test CA"]
    handshake(ctx, server_context())
    assert "BEGIN CERTIFICATE" not in repr(kafka_security(client))


@pytest.mark.parametrize("key, password", [(CLIENT_KEY, None), (CLIENT_KEY_ENCRYPTED, KEY_PASSWORD)])
def test_ssl_client_certificate_is_presented(key, password):
    client = {"security.protocol": "SSL", "ssl.ca.location": CA, "ssl.certificate.location": CLIENT_CERT,
              "ssl.key.location": key, **({"ssl.key.password": password} if password else {})}
    ctx = aiokafka_kwargs(client)["ssl_context"]
    _, server_side = handshake(ctx, server_context(client_cert=True))
    assert subject_cn(server_side.getpeercert()) == "regionguard test client"
    without = aiokafka_kwargs({"security.protocol": "SSL", "ssl.ca.location": CA})["ssl_context"]
    with pytest.raises(ssl.SSLError):  # the same broker refuses a client without one
        handshake(without, server_context(client_cert=True))


def test_ssl_hostname_check_off_with_algorithm_none():
    ctx = aiokafka_kwargs({"security.protocol": "SSL", "ssl.ca.location": CA,
                           "ssl.endpoint.identification.algorithm": "none"})["ssl_context"]
    assert ctx.check_hostname is False and ctx.verify_mode == ssl.CERT_REQUIRED
    handshake(ctx, server_context(), hostname="elsewhere.test")  # the name is not checked, the CA still is
    untrusted = aiokafka_kwargs({"security.protocol": "SSL",
                                 "ssl.endpoint.identification.algorithm": "NONE"})["ssl_context"]
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(untrusted, server_context(), hostname="elsewhere.test")


@pytest.mark.parametrize("off", [False, "false", "FALSE", 0])
def test_ssl_certificate_verification_off(off):
    ctx = aiokafka_kwargs({"security.protocol": "SSL", "enable.ssl.certificate.verification": off})["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_NONE and ctx.check_hostname is False
    handshake(ctx, server_context(), hostname="elsewhere.test")  # no CA, wrong name: accepted, as librdkafka does


def test_ssl_cipher_suites_reach_openssl():
    ctx = aiokafka_kwargs({"security.protocol": "SSL", "ssl.ca.location": CA,
                           "ssl.cipher.suites": "ECDHE-RSA-AES128-GCM-SHA256"})["ssl_context"]
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == {"ECDHE-RSA-AES128-GCM-SHA256"}


# ---- SASL ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("alias", ["sasl.mechanism", "sasl.mechanisms"])
def test_sasl_plaintext(mechanism, alias):
    client = {"security.protocol": "SASL_PLAINTEXT", alias: mechanism, "sasl.username": "rg-user",
              "sasl.password": SECRET, "ssl.ca.location": "/nonexistent/ca.pem"}  # no TLS: not read
    sec = kafka_security(client)
    assert (sec.protocol, sec.mechanism, sec.username, sec.password, sec.tls) == (
        "SASL_PLAINTEXT", mechanism, "rg-user", SECRET, None)
    assert aiokafka_kwargs(client) == {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": mechanism,
                                       "sasl_plain_username": "rg-user", "sasl_plain_password": SECRET,
                                       "ssl_context": None}
    assert SECRET not in repr(sec) and "rg-user" not in repr(sec)


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sasl_ssl(mechanism):
    client = {"security.protocol": "sasl_ssl", "sasl.mechanism": mechanism, "sasl.username": "rg",
              "sasl.password": 12345, "ssl.ca.location": CA}
    kw = aiokafka_kwargs(client)
    assert (kw["security_protocol"], kw["sasl_mechanism"], kw["sasl_plain_username"], kw["sasl_plain_password"]) \
        == ("SASL_SSL", mechanism, "rg", "12345")
    ctx = kw["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname is True
    assert [subject_cn(c) for c in ctx.get_ca_certs()] == ["regionguard test CA"]
    handshake(ctx, server_context())


# ---- refusals: at config load, one line, naming the key, no secret ----------------------------------

SASL = {"security.protocol": "SASL_SSL", "sasl.username": "rg-user", "sasl.password": SECRET}


@pytest.mark.parametrize("client, needle", [
    ({**SASL, "sasl.mechanism": "GSSAPI"}, "'sasl.mechanism' 'GSSAPI' is not supported"),
    ({**SASL, "sasl.mechanism": "OAUTHBEARER"}, "'sasl.mechanism' OAUTHBEARER is configured in kafka.auth"),
    ({**SASL, "sasl.mechanism": "plain"}, "'sasl.mechanism' 'plain' is not supported: use one of PLAIN"),
    ({**SASL, "sasl.mechanisms": "SCRAM-SHA-256"} | {"sasl.mechanism": "PLAIN"}, "disagree"),
    (SASL, "SASL_SSL needs 'sasl.mechanism'"),
    ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.password": SECRET},
     "needs 'sasl.username' and 'sasl.password'"),
    ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "rg-user"},
     "needs 'sasl.username' and 'sasl.password'"),
    ({**SASL, "security.protocol": "SASL_TLS", "sasl.mechanism": "PLAIN"}, "'security.protocol' must be one of"),
    ({"security.protocol": "SSL", "ssl.keystore.location": "/k.p12", "ssl.keystore.password": SECRET},
     "'ssl.keystore.location' is not supported: PKCS#12"),
    ({"security.protocol": "SSL", "ssl.keystore.password": SECRET}, "'ssl.keystore.password' is not supported"),
    ({"security.protocol": "SSL", "ssl.certificate.pem": "-----BEGIN", "ssl.key.pem": SECRET},
     "'ssl.certificate.pem' is not supported"),
    ({"security.protocol": "SSL", "ssl.key.pem": SECRET}, "'ssl.key.pem' is not supported"),
    ({"security.protocol": "SSL", "ssl.crl.location": "/crl.pem"}, "'ssl.crl.location' is not supported"),
    ({"security.protocol": "SSL", "ssl.curves.list": "P-256"}, "'ssl.curves.list' is not supported"),
    ({"security.protocol": "SSL", "ssl.engine.id": "pkcs11"}, "'ssl.engine.id' is not supported"),
    ({**SASL, "sasl.mechanism": "PLAIN", "sasl.kerberos.keytab": "/k"}, "'sasl.kerberos.keytab' is not supported"),
    ({**SASL, "sasl.mechanism": "PLAIN", "sasl.oauthbearer.client.secret": SECRET},
     "'sasl.oauthbearer.client.secret' is not supported: configure OAUTHBEARER in kafka.auth"),
    ({"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "dns"},
     "'ssl.endpoint.identification.algorithm' must be https or none"),
    ({"security.protocol": "SSL", "enable.ssl.certificate.verification": "no"},
     "'enable.ssl.certificate.verification' must be true or false"),
    ({"security.protocol": "SSL", "ssl.ca.location": CA, "ssl.ca.pem": "-----BEGIN"},
     "set one of 'ssl.ca.location' and 'ssl.ca.pem'"),
    ({"security.protocol": "SSL", "ssl.certificate.location": CLIENT_CERT}, "go together"),
    ({"security.protocol": "SSL", "ssl.key.location": CLIENT_KEY, "ssl.key.password": SECRET}, "go together"),
    ({"security.protocol": "SSL", "ssl.key.password": SECRET}, "'ssl.key.password' is set without"),
])
def test_untranslatable_settings_are_refused_at_config_load(client, needle):
    with pytest.raises(ConfigError) as exc:
        cfg_with(client)
    msg = str(exc.value)
    assert msg.startswith("config: kafka.client: ") and "\n" not in msg
    assert needle in msg, msg
    assert SECRET not in msg and "rg-user" not in msg


# ---- files that do not load: a ConfigError naming the setting, never the password -------------------

@pytest.mark.parametrize("client, needle", [
    ({"security.protocol": "SSL", "ssl.ca.location": "/nonexistent/ca.pem"},
     "'ssl.ca.location' /nonexistent/ca.pem: cannot load CA certificates"),
    ({"security.protocol": "SSL", "ssl.ca.location": CLIENT_KEY}, "'ssl.ca.location'"),
    ({"security.protocol": "SSL", "ssl.certificate.location": CLIENT_CERT, "ssl.key.location": CLIENT_KEY_ENCRYPTED,
      "ssl.key.password": SECRET}, f"'ssl.certificate.location' {CLIENT_CERT} with 'ssl.key.location'"),
    ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN", "sasl.username": "rg-user",
      "sasl.password": SECRET, "ssl.cipher.suites": "NO-SUCH-CIPHER"}, "'ssl.cipher.suites' matches no cipher"),
])
def test_unloadable_tls_files_are_config_errors(client, needle):
    with pytest.raises(ConfigError) as exc:
        faust_credentials(cfg_with(client))
    msg = str(exc.value)
    assert msg.startswith("kafka.client: ") and needle in msg and "\n" not in msg, msg
    assert SECRET not in msg and "rg-user" not in msg


def test_health_exits_2_on_an_unloadable_ca_before_touching_kafka(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kafka: {bootstrap: '127.0.0.1:1', client: {security.protocol: SASL_SSL, "
                    f"sasl.mechanism: PLAIN, sasl.username: rg-user, sasl.password: {SECRET}, "
                    "ssl.ca.location: /nonexistent/ca.pem}}\n"
                    "regions: {eu: {dsn: 'postgresql://u@h/db'}}\ntables: {t: {key: [id]}}\n")
    proc = subprocess.run([sys.executable, "-m", "regionguard.cli", "health", "--config", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "'ssl.ca.location' /nonexistent/ca.pem" in lines[0], proc.stderr
    assert SECRET not in proc.stderr + proc.stdout and "rg-user" not in proc.stderr
