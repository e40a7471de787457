"""Moved to :mod:`regionguard_testkit.embedded.proxy` (the installed demo uses it); re-exported for tests."""

from regionguard_testkit.embedded.proxy import *  # noqa: F401,F403
from regionguard_testkit.embedded.proxy import __all__  # noqa: F401
