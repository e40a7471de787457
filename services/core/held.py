"""The headers on a record of the held topic (``rg.held.<region>``); values are UTF-8 bytes.

The router writes them when it diverts a write (or a fence) to the held
topic; the replayer, ``regionguard dead-letters`` and ``regionguard status``
read them. They live here, below both services, so neither imports the other.
"""

from __future__ import annotations

H_REASON = "rg-hold-reason"
H_HELD_AT = "rg-held-at"
H_SOURCE_TOPIC = "rg-source-topic"
H_SOURCE_PARTITION = "rg-source-partition"
H_SOURCE_OFFSET = "rg-source-offset"
H_APPLIED_IN = "rg-applied-in"
#: the producer's record timestamp (ms since the epoch): the held copy's own is when it was held
H_SOURCE_TIMESTAMP = "rg-source-timestamp"
#: on a fence (a record with no value): the router instance that wrote it
H_FENCE = "rg-fence"
# on a held record the router would have dead-lettered (value: ``shed`` or ``expired``) but an
# earlier owner of its partition may have applied before it crashed: the replayer checks the
# region's inbox and dead-letters it with this reason only if it was not applied
H_VERIFY = "rg-verify"

#: The headers regionguard sets on held copies; a producer's headers of these names are dropped
#: when a write is copied (core/writes.py, Record.carried_headers).
OWN_HEADERS = frozenset({H_REASON, H_HELD_AT, H_SOURCE_TOPIC, H_SOURCE_PARTITION, H_SOURCE_OFFSET, H_APPLIED_IN,
                         H_FENCE, H_VERIFY, H_SOURCE_TIMESTAMP})

__all__ = ["OWN_HEADERS", "H_REASON", "H_HELD_AT", "H_SOURCE_TOPIC", "H_SOURCE_PARTITION", "H_SOURCE_OFFSET",
           "H_APPLIED_IN", "H_FENCE", "H_VERIFY", "H_SOURCE_TIMESTAMP"]
