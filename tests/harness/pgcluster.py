"""Moved to :mod:`regionguard_testkit.embedded.pgcluster` (the installed demo uses it); re-exported for tests."""

from regionguard_testkit.embedded.pgcluster import *  # noqa: F401,F403
from regionguard_testkit.embedded.pgcluster import __all__  # noqa: F401
