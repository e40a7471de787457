"""The services' core. The modules applications need too live in the client distribution.

``regionguard_client.core`` (clients/python) holds the config, the wire models, the Kafka and SQL
helpers and the views' machinery, once, so ``pip install regionguard-client`` brings no faust,
rich nor prometheus-client. They stay importable here under their old names, as the same module
objects (not copies: one ``Config`` class, one set of counters, and a test's monkeypatch of
``regionguard.core.kafka`` reaches the client's code too), so no import in the services changed.
"""

import importlib
import sys

from regionguard_client.core import SHARED

for _name in SHARED:
    _module = importlib.import_module(f"regionguard_client.core.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
del _name, _module
