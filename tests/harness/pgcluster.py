"""Moved to :mod:`regionguard.embedded.pgcluster` (the installed demo uses it); re-exported for tests."""

from regionguard.embedded.pgcluster import *  # noqa: F401,F403
from regionguard.embedded.pgcluster import __all__  # noqa: F401
