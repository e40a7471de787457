"""Verification kit: a load generator that remembers what Kafka acknowledged, and a
checker that holds every region's database to that record.

- :mod:`.loadgen` -- :class:`LoadGen` produces versioned upserts, unique inserts,
  deletes, atomic write groups (an order with its items, keyed by customer),
  failover/shed/expiring writes and a few deliberately bad writes and groups
  through :class:`regionguard.client.WriteProducer`, and records each write
  in a :class:`Model` only after ``flush()`` confirmed it.
- :mod:`.checker` -- :func:`check` compares every region's tables, inbox
  (``regionguard_applied``), effect log and the dead-letter topic with the
  model: lost, applied twice, rows not at their highest version, unexplained
  dead letters, a group half applied or split over transactions. :func:`wait_quiescent` waits until every held backlog is
  replayed and every partition is direct again.
- :mod:`.stack` -- :class:`Stack` runs broker, regions, services and faults for
  the chaos suite and ``regionguard demo``.
"""

from .checker import CheckResult, DeadLetterReader, check, wait_quiescent
from .loadgen import VERIFY_SCHEMA, LoadGen, Model, WriteRecord

__all__ = ["CheckResult", "DeadLetterReader", "LoadGen", "Model", "VERIFY_SCHEMA", "WriteRecord", "check",
           "wait_quiescent"]
