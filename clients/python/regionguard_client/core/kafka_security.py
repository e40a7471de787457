"""librdkafka's security settings (``kafka.client``) translated for aiokafka, faust's client.

Every service talks to Kafka through librdkafka and gets ``kafka.client`` as is.
The health service's leader election runs on faust-streaming, whose client is
aiokafka: it needs the same security as an aiokafka ``security_protocol``,
``sasl_mechanism``, username, password and an :class:`ssl.SSLContext`.
:func:`kafka_security` is the one translation (pure: it reads no file);
:func:`ssl_context` builds the context from its result.

A setting the translation cannot carry over with librdkafka's meaning is refused
(ValueError, one line naming the key, raised at config load by
``core/config.py``) rather than dropped, so the health service never connects
with weaker or different security than the other services. No message carries
a value of a secret (``sasl.username``, ``sasl.password``, ``ssl.key.password``,
``ssl.ca.pem``).

Supported, with librdkafka's defaults:

- ``security.protocol``: PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL (any case)
- ``sasl.mechanism`` (or its alias ``sasl.mechanisms``): PLAIN, SCRAM-SHA-256,
  SCRAM-SHA-512, with ``sasl.username`` and ``sasl.password``; OAUTHBEARER is
  configured in ``kafka.auth`` (``core/kafka_auth.py``), never here, so that
  both client kinds get their token from the same place
- ``ssl.ca.location`` (file, directory, or ``probe``), ``ssl.ca.pem``,
  ``ssl.certificate.location`` + ``ssl.key.location`` (PEM) with
  ``ssl.key.password``, ``enable.ssl.certificate.verification``,
  ``ssl.endpoint.identification.algorithm`` (https, none), ``ssl.cipher.suites``
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field
from typing import Any, Mapping

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: what aiokafka does with a username and password, exactly as librdkafka does
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

#: every security setting translated; any other key in the namespaces below is refused
SUPPORTED = (
    "security.protocol", "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.password",
    "ssl.ca.location", "ssl.ca.pem", "ssl.certificate.location", "ssl.key.location", "ssl.key.password",
    "enable.ssl.certificate.verification", "ssl.endpoint.identification.algorithm", "ssl.cipher.suites",
)
#: prefixes of librdkafka's security settings (sasl.kerberos.*, sasl.oauthbearer.*, ssl.keystore.*,
#: ssl.crl.location, ssl.engine.*, https.* of the OIDC token endpoint, ...)
_NAMESPACES = ("ssl.", "ssl_", "sasl.", "enable.ssl.", "enable.sasl.", "https.")

_WHY_PEM_FILES = "use ssl.certificate.location and ssl.key.location (PEM files)"
#: why a known librdkafka security setting is refused (key prefix -> reason)
_REFUSED = {
    "ssl.keystore.": f"PKCS#12 keystores cannot be loaded by Python's ssl module; {_WHY_PEM_FILES}",
    "ssl.certificate.pem": f"an inline client certificate cannot be loaded by Python's ssl module; {_WHY_PEM_FILES}",
    "ssl.key.pem": f"an inline private key cannot be loaded by Python's ssl module; {_WHY_PEM_FILES}",
    "sasl.kerberos.": "GSSAPI (Kerberos) is not supported",
    "sasl.oauthbearer.": "configure OAUTHBEARER in kafka.auth (docs/kafka-auth.md)",
    "enable.sasl.oauthbearer.": "configure OAUTHBEARER in kafka.auth (docs/kafka-auth.md)",
}
_WHERE = "the health service's leader election (faust/aiokafka) cannot apply it with librdkafka's meaning"


@dataclass(frozen=True)
class TlsSettings:
    """What an :class:`ssl.SSLContext` must hold; built by :func:`ssl_context`."""

    ca_location: str | None = None  # a file, a directory or "probe"; None and no ca_pem: the system's CAs
    ca_pem: str | None = field(default=None, repr=False)
    certificate_location: str | None = None
    key_location: str | None = None
    key_password: str | None = field(default=None, repr=False)
    verify_certificate: bool = True  # enable.ssl.certificate.verification
    check_hostname: bool = True  # ssl.endpoint.identification.algorithm=https, librdkafka's default since 2.0
    ciphers: str | None = None  # an OpenSSL cipher list, as librdkafka hands it to OpenSSL


@dataclass(frozen=True)
class KafkaSecurity:
    """How to connect: aiokafka's ``security_protocol`` and, for SASL, the mechanism and credentials."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None  # set exactly when protocol is SSL or SASL_SSL

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")


def _bool(key: str, value: Any) -> bool:
    # librdkafka takes true/false (any case) and, through confluent-kafka, 0/1 and Python bools
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise ValueError(f"{key!r} must be true or false")


def _text(client: Mapping[str, Any], key: str) -> str | None:
    value = client.get(key)
    if value is None or value == "":
        return None
    return str(value)


def _refuse_untranslatable_keys(client: Mapping[str, Any]) -> None:
    for key in client:
        if key in SUPPORTED or not key.startswith(_NAMESPACES):
            continue
        why = next((reason for prefix, reason in _REFUSED.items() if key.startswith(prefix)), None)
        raise ValueError(f"{key!r} is not supported: {why or _WHERE}")


def _mechanism(client: Mapping[str, Any]) -> str | None:
    given = {k: str(client[k]) for k in ("sasl.mechanism", "sasl.mechanisms") if client.get(k) not in (None, "")}
    if len(set(given.values())) > 1:
        raise ValueError("'sasl.mechanism' and its alias 'sasl.mechanisms' disagree: set one")
    mech = next(iter(given.values()), None)
    if mech == "OAUTHBEARER":
        raise ValueError("'sasl.mechanism' OAUTHBEARER is configured in kafka.auth (docs/kafka-auth.md), "
                         "not in kafka.client")
    if mech is not None and mech not in MECHANISMS:
        # librdkafka's mechanism names are case-sensitive too ("plain" fails there)
        raise ValueError(f"'sasl.mechanism' {mech!r} is not supported: use one of {', '.join(MECHANISMS)} "
                         "(GSSAPI and OAUTHBEARER cannot be given to the health service's leader election)")
    return mech


def _tls(client: Mapping[str, Any]) -> TlsSettings:
    ca_location, ca_pem = _text(client, "ssl.ca.location"), _text(client, "ssl.ca.pem")
    if ca_location is not None and ca_pem is not None:
        raise ValueError("set one of 'ssl.ca.location' and 'ssl.ca.pem', not both")
    cert, key = _text(client, "ssl.certificate.location"), _text(client, "ssl.key.location")
    if (cert is None) != (key is None):
        raise ValueError("'ssl.certificate.location' and 'ssl.key.location' go together: a client certificate "
                         "needs its private key")
    if _text(client, "ssl.key.password") is not None and key is None:
        raise ValueError("'ssl.key.password' is set without 'ssl.key.location'")
    algorithm = str(client.get("ssl.endpoint.identification.algorithm", "https")).strip().lower()
    if algorithm not in ("https", "none"):
        raise ValueError("'ssl.endpoint.identification.algorithm' must be https or none")
    verify = _bool("enable.ssl.certificate.verification", client.get("enable.ssl.certificate.verification", True))
    return TlsSettings(ca_location=ca_location, ca_pem=ca_pem, certificate_location=cert, key_location=key,
                       key_password=_text(client, "ssl.key.password"), verify_certificate=verify,
                       # without verification OpenSSL ignores a hostname mismatch as well
                       check_hostname=verify and algorithm == "https",
                       ciphers=_text(client, "ssl.cipher.suites"))


def kafka_security(client: Mapping[str, Any], *, oauthbearer: bool = False) -> KafkaSecurity:
    """Translate librdkafka ``client`` settings; ValueError (one line, no secret) for what cannot be.

    Pure: files named by the settings are read by :func:`ssl_context`, not here.
    Settings librdkafka ignores under the chosen protocol (ssl.* under
    SASL_PLAINTEXT, sasl.* under SSL) are checked all the same but do nothing,
    as in librdkafka. ``oauthbearer``: ``kafka.auth`` is set, so the mechanism
    is OAUTHBEARER and ``kafka.client`` may name no other SASL credentials.
    """
    _refuse_untranslatable_keys(client)
    protocol = str(client.get("security.protocol", "PLAINTEXT")).strip().upper()
    if protocol not in PROTOCOLS:
        raise ValueError(f"'security.protocol' must be one of {', '.join(PROTOCOLS)}")
    mechanism = _mechanism(client)
    tls = _tls(client)
    if oauthbearer:
        return _oauthbearer(client, protocol, mechanism, tls)
    if not protocol.startswith("SASL_"):
        return KafkaSecurity(protocol=protocol, tls=tls if protocol == "SSL" else None)
    if mechanism is None:
        raise ValueError(f"security.protocol {protocol} needs 'sasl.mechanism' ({', '.join(MECHANISMS)}): "
                         "librdkafka's default, GSSAPI, is not supported")
    username, password = _text(client, "sasl.username"), _text(client, "sasl.password")
    if username is None or password is None:
        raise ValueError(f"sasl.mechanism {mechanism} needs 'sasl.username' and 'sasl.password'")
    return KafkaSecurity(protocol=protocol, mechanism=mechanism, username=username, password=password,
                         tls=tls if protocol == "SASL_SSL" else None)


def _oauthbearer(client: Mapping[str, Any], protocol: str, mechanism: str | None,
                 tls: TlsSettings) -> KafkaSecurity:
    if not protocol.startswith("SASL_"):
        raise ValueError("kafka.auth needs 'security.protocol' SASL_SSL (or SASL_PLAINTEXT) in kafka.client, "
                         f"not {protocol}")
    if mechanism is not None:
        raise ValueError(f"'sasl.mechanism' {mechanism} contradicts kafka.auth (OAUTHBEARER): remove it")
    given = [k for k in ("sasl.username", "sasl.password") if _text(client, k) is not None]
    if given:
        raise ValueError(f"{given[0]!r} is not used with kafka.auth (OAUTHBEARER): remove it")
    return KafkaSecurity(protocol=protocol, mechanism="OAUTHBEARER", tls=tls if protocol == "SASL_SSL" else None)


def ssl_context(tls: TlsSettings) -> ssl.SSLContext:
    """The client :class:`ssl.SSLContext` for ``tls``: reads the files it names.

    ValueError names the setting and its path (never a password or PEM text)
    when a file cannot be read or a key does not open.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # TLS 1.2+, CERT_REQUIRED, hostname checked
    ctx.check_hostname = tls.check_hostname  # before verify_mode: CERT_NONE needs it off
    if not tls.verify_certificate:
        ctx.verify_mode = ssl.CERT_NONE
    try:
        if tls.ca_pem is not None:
            ctx.load_verify_locations(cadata=tls.ca_pem)
        elif tls.ca_location is None or tls.ca_location == "probe":
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        elif os.path.isdir(tls.ca_location):
            ctx.load_verify_locations(capath=tls.ca_location)
        else:
            ctx.load_verify_locations(cafile=tls.ca_location)
    except (OSError, ssl.SSLError) as exc:
        where = f"'ssl.ca.location' {tls.ca_location}" if tls.ca_pem is None else "'ssl.ca.pem'"
        raise ValueError(f"{where}: cannot load CA certificates ({_reason(exc)})") from None
    if tls.certificate_location is not None:
        try:
            ctx.load_cert_chain(tls.certificate_location, tls.key_location, tls.key_password)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"'ssl.certificate.location' {tls.certificate_location} with 'ssl.key.location' "
                             f"{tls.key_location}: cannot load ({_reason(exc)})") from None
    if tls.ciphers is not None:
        try:
            ctx.set_ciphers(tls.ciphers)
        except ssl.SSLError:
            raise ValueError("'ssl.cipher.suites' matches no cipher OpenSSL knows") from None
    return ctx


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.strerror:
        return exc.strerror
    return str(getattr(exc, "reason", None) or type(exc).__name__)
