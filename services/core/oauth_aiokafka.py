"""The ``kafka.auth`` token for aiokafka, the client of the health service's leader election (faust).

aiokafka asks an :class:`~aiokafka.abc.AbstractTokenProvider` for the token at
each SASL handshake; this one hands out the process's shared
:class:`~.oauth_tokens.TokenSource` token, fetched off the event loop since a
fetch may block on the network (OIDC endpoint, STS). A separate module from
``oauth_tokens.py`` so that services without aiokafka never import it.
"""

from __future__ import annotations

import asyncio

from aiokafka.abc import AbstractTokenProvider

from .oauth_tokens import TokenSource


class AiokafkaTokenProvider(AbstractTokenProvider):
    """aiokafka's ``sasl_oauth_token_provider`` backed by a :class:`TokenSource`."""

    def __init__(self, source: TokenSource) -> None:
        self.source = source

    async def token(self) -> str:
        return (await asyncio.to_thread(self.source.get)).value

    def extensions(self) -> dict[str, str]:
        return self.source.extensions
