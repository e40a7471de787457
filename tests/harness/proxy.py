"""Moved to :mod:`regionguard.embedded.proxy` (the installed demo uses it); re-exported for tests."""

from regionguard.embedded.proxy import *  # noqa: F401,F403
from regionguard.embedded.proxy import __all__  # noqa: F401
