"""The error both broker launchers raise, in a module of its own so neither launcher imports the other for it.

:mod:`.broker` (tansu or an external broker) picks :mod:`.kafka` (Apache Kafka)
in :meth:`~.broker.Broker.from_env`; :mod:`.kafka` needs only this error.
"""

from __future__ import annotations

__all__ = ["BrokerError"]


class BrokerError(RuntimeError):
    """The broker did not start or did not answer in time."""
