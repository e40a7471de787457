"""Moved to :mod:`regionguard_testkit.embedded.regions` (the installed demo uses it); re-exported for tests."""

from regionguard_testkit.embedded.regions import *  # noqa: F401,F403
from regionguard_testkit.embedded.regions import __all__  # noqa: F401
