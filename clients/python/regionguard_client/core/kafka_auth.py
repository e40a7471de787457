"""``kafka.auth``: SASL/OAUTHBEARER for every Kafka client, configured in one place.

librdkafka (every service) and aiokafka (the health service's leader election)
authenticate with the same bearer token, fetched by the token source of
``core/oauth_tokens.py`` from one of three providers:

- ``msk_iam``: Amazon MSK IAM, a SigV4-signed token from
  ``aws-msk-iam-sasl-signer-python`` (the ``msk`` extra);
- ``oidc``: an OAuth 2 client-credentials grant at a generic OIDC provider's
  token endpoint (Keycloak, Okta, Entra ID, Confluent Cloud identity pools);
- ``unsecured_jwt``: an unsigned JWT that Apache Kafka's default unsecured
  validator accepts (development and tests only).

``security.protocol`` (SASL_SSL or SASL_PLAINTEXT) and the ``ssl.*`` settings
stay in ``kafka.client``; ``sasl.mechanism`` is set from here. A secret may be
given as ``${env:NAME}`` or ``${file:/path}`` like any config value (core/refs.py
resolves it at load); it is kept as a :class:`~pydantic.SecretStr`, so no repr,
log line or error message shows it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal, Union
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

#: the import name of the MSK IAM signer, the one requirement of the ``msk`` extra
MSK_SIGNER = "aws_msk_iam_sasl_signer"
MSK_EXTRA = "pip install 'regionguard[msk]'"

_AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
#: RFC 7628 extension keys (the broker refuses others; "auth" is reserved)
_EXTENSION_KEY = re.compile(r"^[A-Za-z]+$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class UnsecuredJwtToken(_Frozen):
    """An unsigned JWT, accepted only by a broker that runs Kafka's unsecured validator (not for production)."""

    provider: Literal["unsecured_jwt"]
    principal: str = Field(min_length=1, max_length=256, description="The token's `sub` claim: the principal.")
    scope: tuple[str, ...] = Field((), description="The token's `scope` claim (a broker may require one).")
    lifetime_s: float = Field(3600.0, gt=0, le=86400, description="How long each token is valid.")


class OidcToken(_Frozen):
    """OAuth 2 client credentials at an OIDC provider's token endpoint (HTTP Basic client authentication)."""

    provider: Literal["oidc"]
    token_endpoint_url: str = Field(description="The provider's token endpoint; https (http only on loopback).")
    client_id: str = Field(min_length=1, description="The OAuth client id.")
    client_secret: SecretStr = Field(description="The client secret; `${env:NAME}` reads it from the environment.")
    scope: str | None = Field(None, description="The `scope` parameter of the token request, if the provider needs one.")
    extensions: dict[str, str] = Field(
        default_factory=dict,
        description="SASL extensions sent with the token (Confluent Cloud: logicalCluster, identityPoolId).")
    ca_location: str | None = Field(None, description="CA bundle (PEM) for the token endpoint; default: the system's.")
    timeout_s: float = Field(10.0, gt=0, le=60, description="Timeout of one token request.")

    @field_validator("token_endpoint_url")
    @classmethod
    def _https(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise ValueError("must be https: the client secret would cross the network in clear text")
        if parts.username or parts.password:
            raise ValueError("must not hold credentials: use client_id and client_secret")
        return v

    @field_validator("extensions")
    @classmethod
    def _extension_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _EXTENSION_KEY.match(key) or key == "auth":
                raise ValueError(f"extension key {key!r} must be letters only and not 'auth' (RFC 7628)")
        return v


class MskIamToken(_Frozen):
    """Amazon MSK IAM: a token signed with the AWS credentials of the process (default chain, profile or role)."""

    provider: Literal["msk_iam"]
    region: str = Field(description="The AWS region of the MSK cluster, e.g. eu-west-1.")
    profile: str | None = Field(None, description="An AWS profile to sign with instead of the default chain.")
    role_arn: str | None = Field(None, description="An IAM role to assume (through STS) and sign with.")

    @field_validator("region")
    @classmethod
    def _region(cls, v: str) -> str:
        if not _AWS_REGION.match(v):
            raise ValueError(f"{v!r} is not an AWS region name (like eu-west-1)")
        return v

    @model_validator(mode="after")
    def _one_identity_and_the_extra(self):
        if self.profile is not None and self.role_arn is not None:
            raise ValueError("set one of profile and role_arn, not both")
        try:
            __import__(MSK_SIGNER)
        except ImportError:
            raise ValueError(f"provider msk_iam needs the aws-msk-iam-sasl-signer-python package: {MSK_EXTRA}") \
                from None
        return self


TokenConfig = Annotated[Union[MskIamToken, OidcToken, UnsecuredJwtToken], Field(discriminator="provider")]


class KafkaAuthConfig(_Frozen):
    """How every Kafka client authenticates; ``security.protocol`` and TLS stay in ``kafka.client``."""

    mechanism: Literal["oauthbearer"] = Field(description="The SASL mechanism; only oauthbearer for now.")
    token: TokenConfig = Field(description="Where the bearer token comes from: msk_iam, oidc or unsecured_jwt.")
