"""regionguard's test kit: real infrastructure on one machine (:mod:`.embedded`), the verify kit
(:mod:`.verify`) and :class:`~.testing.StatePublisher` (:mod:`.testing`).

A distribution of its own (``regionguard-testkit``), so the ``regionguard``
wheel carries none of it; it may import anything of ``regionguard``, and
nothing in ``regionguard`` imports it except ``regionguard demo`` and
``regionguard drill``, lazily (:mod:`regionguard.ops.kit`).
"""
