"""``python -m labfolio``: the ``labfolio`` command, for environments without its console script."""

from labfolio.cli import main

main()
