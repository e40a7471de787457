"""Moved to :mod:`regionguard_testkit.embedded.net` (the installed demo uses it); re-exported for tests."""

from regionguard_testkit.embedded.net import *  # noqa: F401,F403
from regionguard_testkit.embedded.net import __all__  # noqa: F401
