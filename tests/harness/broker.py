"""Moved to :mod:`regionguard_testkit.embedded.broker` (the installed demo uses it); re-exported for tests."""

from regionguard_testkit.embedded.broker import *  # noqa: F401,F403
from regionguard_testkit.embedded.broker import __all__  # noqa: F401
