"""What the client and the services share: the config, the wire models, Kafka and SQL helpers.

These modules are the contract's code (docs/contract.md): the YAML config an app loads is the
services' config, the events it produces are the router's events, the region-state records its
views follow are the health service's. So they live here, in the light distribution, once; the
service distribution imports them under their old names (``regionguard.core.<name>`` is the very
same module object: services/core/__init__.py). Nothing here imports the service package, faust,
rich or prometheus-client (core/counters.py says how the counters do without it).
"""

#: The modules of this package, as ``regionguard.core`` re-exports them (keep in step with the files)
SHARED = ("cache", "cast", "config", "counters", "dsn", "errors", "flags", "follower", "kafka", "kafka_auth",
          "kafka_security", "latest", "log", "models", "oauth_tokens", "racks", "refs", "sizes", "sql",
          "stategate", "stateview", "supervise")
