"""The three-region test bed of the regional chaos run (issue 26): see :mod:`.bed`."""
