"""Moved to :mod:`regionguard.embedded.net` (the installed demo uses it); re-exported for tests."""

from regionguard.embedded.net import *  # noqa: F401,F403
from regionguard.embedded.net import __all__  # noqa: F401
