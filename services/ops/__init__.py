"""Operations: commands an operator runs, each doing one job and exiting.

``status`` (+ ``statusdata``), ``inbox`` (``inboxadmin``), ``dead-letters``
(``deadletters/``), ``schemas``, ``drill`` and ``demo``; ``configref`` renders
docs/configuration.md's reference. ``regionguard.cli`` dispatches to them. They
may import anything of regionguard below them (core, services, client); only
``demo`` and ``drill`` reach into the test kit, lazily.
"""
