"""The Redis write-through format, for applications reading the cache directly.

Re-exported from :mod:`regionguard_client.core.cache`, where the router (writer) and
:class:`~regionguard_client.reader.RegionalReader` (reader) share it.
"""

from .core.cache import KEY_PREFIX, cache_age_s, cache_key, row_from_cache, row_to_cache

__all__ = ["KEY_PREFIX", "cache_key", "row_to_cache", "row_from_cache", "cache_age_s"]
