"""Compatibility: the application SDK is the ``regionguard-client`` distribution, ``import regionguard_client``.

Kept so that ``from regionguard.client import WriteProducer`` (and ``regionguard.client.reader``
and the other submodules) keep working in applications that install the service package: each
name here is the client's own module or object, not a copy. New code imports ``regionguard_client``.
"""

import importlib
import sys

import regionguard_client
from regionguard_client import *  # noqa: F401,F403 - re-exported
from regionguard_client import __all__  # noqa: F401

#: The client's modules, importable as ``regionguard.client.<name>`` too
MODULES = ("cache", "consistency", "delivery", "middleware", "producer", "reader", "views", "waitbudget")

for _name in MODULES:
    _module = importlib.import_module(f"regionguard_client.{_name}")
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module
del _name, _module


def __getattr__(name: str):
    return getattr(regionguard_client, name)  # the middleware's names, resolved lazily there
