"""Moved to :mod:`regionguard.embedded.regions` (the installed demo uses it); re-exported for tests."""

from regionguard.embedded.regions import *  # noqa: F401,F403
from regionguard.embedded.regions import __all__  # noqa: F401
