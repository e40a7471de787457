"""The bearer token of ``kafka.auth``, fetched once per process and handed to both client kinds.

One :class:`TokenSource` per process serves every librdkafka client (as
``oauth_cb``, :func:`librdkafka_settings`) and the health service's aiokafka
client (``core/oauth_aiokafka.py``), so every client of a process presents
the same identity and an OIDC provider or STS sees one request per token
lifetime, not one per client.

Why by hand: librdkafka's built-in OIDC (``sasl.oauthbearer.method=oidc``)
does not reach aiokafka, which takes a token provider object, and neither
knows MSK IAM; so the token comes from Python for both. The libraries do the
solved parts: the MSK token is signed by ``aws-msk-iam-sasl-signer-python``,
the token request goes through httpx. What is ours is the small part between:
which provider, the cache, and building the unsecured JWT of Kafka's test
validator (RFC 7519's unsigned form: three base64url parts, the last empty).

Errors: a fetch that fails raises :class:`TokenError` whose one-line message
names the provider and what failed, never a secret or a token.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .kafka_auth import MSK_SIGNER, KafkaAuthConfig, MskIamToken, OidcToken, UnsecuredJwtToken

log = logging.getLogger("regionguard.core.oauth_tokens")  # its name before the move (loggers stay in the regionguard tree)

#: a cached token is handed out again while this share of its lifetime is left; librdkafka asks for a
#: new one at 80% of the lifetime, so by then the cache is past this mark and fetches
REUSE_WHILE_LEFT = 0.5


class TokenError(Exception):
    """A token could not be fetched; one line, no secret. Asking again may help (network, STS, 5xx)."""


class TokenRefused(TokenError):
    """The provider refused the request (OIDC: HTTP 400, 401, 403): asking again will not help."""


@dataclass(frozen=True)
class Token:
    value: str = field(repr=False)
    expires_at: float  # seconds since the epoch
    principal: str
    fetched_at: float

    def worth_reusing(self, now: float) -> bool:
        return now < self.expires_at - (self.expires_at - self.fetched_at) * REUSE_WHILE_LEFT


def _b64url(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsecured_jwt(tok: UnsecuredJwtToken, now: float) -> Token:
    """An unsigned JWT (``alg: none``) with ``sub``, ``iat``, ``exp`` and, when configured, ``scope``."""
    claims: dict[str, Any] = {"sub": tok.principal, "iat": int(now), "exp": int(now + tok.lifetime_s)}
    if tok.scope:
        claims["scope"] = list(tok.scope)
    value = f"{_b64url({'alg': 'none'})}.{_b64url(claims)}."
    return Token(value, float(claims["exp"]), tok.principal, now)


def jwt_subject(value: str) -> str | None:
    """The ``sub`` claim of a JWT, unverified (only a label for librdkafka's logs), or None."""
    parts = value.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and sub else None


def oidc_token(tok: OidcToken, now: float, post: Callable[..., Any] | None = None) -> Token:
    """A client-credentials grant at ``tok.token_endpoint_url``; ``post`` is httpx.post unless a test's."""
    import httpx

    data = {"grant_type": "client_credentials"}
    if tok.scope:
        data["scope"] = tok.scope
    where = f"OIDC token endpoint {tok.token_endpoint_url}"
    try:
        verify: Any = True
        if tok.ca_location:
            import ssl
            verify = ssl.create_default_context(cafile=tok.ca_location)
        response = (post or httpx.post)(tok.token_endpoint_url, data=data, timeout=tok.timeout_s, verify=verify,
                                        auth=(tok.client_id, tok.client_secret.get_secret_value()),
                                        headers={"Accept": "application/json"})
        response.raise_for_status()
        body = response.json()
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        # RFC 6749 5.2: a bad client or grant is 400 or 401; 403 is a refusal too
        raised = TokenRefused if status in (400, 401, 403) else TokenError
        raise raised(f"{where} answered HTTP {status}") from None
    except httpx.HTTPError as exc:
        raise TokenError(f"{where}: {type(exc).__name__}") from None
    except OSError as exc:  # the CA bundle
        raise TokenError(f"kafka.auth.token.ca_location {tok.ca_location}: {exc.strerror or type(exc).__name__}") \
            from None
    except ValueError:
        raise TokenError(f"{where} answered something that is not JSON") from None
    value = body.get("access_token") if isinstance(body, dict) else None
    lifetime = body.get("expires_in") if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise TokenError(f"{where} answered without an access_token")
    if isinstance(lifetime, bool) or not isinstance(lifetime, (int, float)) or lifetime <= 0:
        raise TokenError(f"{where} answered without a positive expires_in")
    return Token(value, now + float(lifetime), jwt_subject(value) or tok.client_id, now)


def msk_iam_token(tok: MskIamToken, now: float, signer: Any = None) -> Token:
    """A token from the MSK IAM signer (``signer``: its ``MSKAuthTokenProvider`` module unless a test's)."""
    if signer is None:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider as signer  # noqa: N813 - the library's name
    try:  # botocore comes with the signer; its two roots: no credentials or a local problem, and AWS's refusal
        from botocore.exceptions import BotoCoreError, ClientError
        aws_errors: tuple[type[BaseException], ...] = (BotoCoreError, ClientError, OSError)
    except ImportError:
        aws_errors = (OSError,)
    try:
        if tok.role_arn is not None:
            value, expiry_ms = signer.generate_auth_token_from_role_arn(tok.region, tok.role_arn)
        elif tok.profile is not None:
            value, expiry_ms = signer.generate_auth_token_from_profile(tok.region, tok.profile)
        else:
            value, expiry_ms = signer.generate_auth_token(tok.region)
    except aws_errors as exc:
        raise TokenError(f"MSK IAM signer ({tok.region}): {type(exc).__name__}") from None
    return Token(value, expiry_ms / 1000.0, "msk-iam", now)


class TokenSource:
    """The token of one ``kafka.auth`` for every client of the process; thread-safe, cached."""

    def __init__(self, auth: KafkaAuthConfig, *, clock: Callable[[], float] = time.time,
                 fetch: Callable[[float], Token] | None = None) -> None:
        self.auth = auth
        self._clock = clock
        self._fetch = fetch or _fetcher(auth)
        self._lock = threading.Lock()
        self._token: Token | None = None
        self.last_error: TokenError | None = None  # of the latest fetch, for start-up's one line

    @property
    def provider(self) -> str:
        return self.auth.token.provider

    @property
    def extensions(self) -> dict[str, str]:
        return dict(getattr(self.auth.token, "extensions", {}))

    def get(self) -> Token:
        """A valid token: the cached one while it is worth reusing, else a new one (:class:`TokenError`)."""
        with self._lock:
            now = self._clock()
            if self._token is None or not self._token.worth_reusing(now):
                try:
                    self._token = self._fetch(now)
                except TokenError as exc:
                    self.last_error = exc
                    raise
                self.last_error = None
            return self._token

    def oauth_cb(self, _oauthbearer_config: str | None) -> tuple[str, float, str, dict[str, str]]:
        """confluent-kafka's ``oauth_cb``: (token, expiry in epoch seconds, principal, extensions).

        A failure is logged on one line and raised: librdkafka then records the
        token as failed and asks again (every 10 s) while its clients wait.
        """
        try:
            token = self.get()
        except TokenError as exc:
            log.warning("kafka.auth (%s): no token: %s", self.provider, exc)
            raise
        return token.value, token.expires_at, token.principal, self.extensions


def _fetcher(auth: KafkaAuthConfig) -> Callable[[float], Token]:
    tok = auth.token
    if isinstance(tok, UnsecuredJwtToken):
        return lambda now: unsecured_jwt(tok, now)
    if isinstance(tok, OidcToken):
        return lambda now: oidc_token(tok, now)
    if isinstance(tok, MskIamToken):
        return lambda now: msk_iam_token(tok, now)
    raise TypeError(f"no fetcher for {type(tok).__name__}")


_sources: dict[int, tuple[KafkaAuthConfig, TokenSource]] = {}
_sources_lock = threading.Lock()


def token_source(auth: KafkaAuthConfig) -> TokenSource:
    """The process's one :class:`TokenSource` for ``auth`` (the loaded config's, kept alive with it)."""
    with _sources_lock:
        held = _sources.get(id(auth))
        if held is None or held[0] is not auth:
            held = (auth, TokenSource(auth))
            _sources[id(auth)] = held
        return held[1]


def librdkafka_settings(auth: KafkaAuthConfig) -> dict[str, Any]:
    """What a librdkafka client needs beyond ``kafka.client`` (which holds security.protocol and TLS)."""
    return {"sasl.mechanism": "OAUTHBEARER", "oauth_cb": token_source(auth).oauth_cb}


__all__ = ["MSK_SIGNER", "Token", "TokenError", "TokenRefused", "TokenSource", "jwt_subject", "librdkafka_settings",
           "msk_iam_token", "oidc_token", "token_source", "unsecured_jwt"]
