"""Compatibility: the producer moved to :mod:`regionguard.client.producer` (``from regionguard.client import WriteProducer``).

Kept because README documented ``from regionguard.producer import WriteProducer``
before 0.1.0's layout change; new code imports from ``regionguard.client``.
Nothing in this repository imports this module.
"""

from .client.producer import WriteGroup, WriteProducer  # noqa: F401 - re-exported for old imports

__all__ = ["WriteProducer", "WriteGroup"]
