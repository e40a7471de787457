"""Moved to :mod:`regionguard.embedded.config` (the installed demo uses it); re-exported for tests."""

from regionguard.embedded.config import *  # noqa: F401,F403
from regionguard.embedded.config import __all__  # noqa: F401
