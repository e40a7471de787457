"""Moved to :mod:`regionguard.embedded.broker` (the installed demo uses it); re-exported for tests."""

from regionguard.embedded.broker import *  # noqa: F401,F403
from regionguard.embedded.broker import __all__  # noqa: F401
