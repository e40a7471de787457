"""Moved to :mod:`regionguard_testkit.embedded.config` (the installed demo uses it); re-exported for tests."""

from regionguard_testkit.embedded.config import *  # noqa: F401,F403
from regionguard_testkit.embedded.config import __all__  # noqa: F401
