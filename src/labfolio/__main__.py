"""``python -m labfolio``: the ``labfolio`` command, for environments without its console script."""

from labfolio.cli import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
