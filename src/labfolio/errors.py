"""labfolio's exceptions.

Every error labfolio raises on purpose derives from ``LabfolioError``, so callers (and the CLI)
can catch one type and show the message, which always says what to do next::

    LabfolioError
    ├── NoActiveRunError            a module-level call before ``labfolio.init()``
    ├── MetricValueError (+TypeError, ValueError)   a logged value that is not a number
    ├── MetricKeyError (+ValueError)                 an empty or over-long metric key
    ├── ConfigError (+ValueError)                    bad arguments to ``init`` or settings
    ├── StoreError                  the store cannot be opened, read or written
    │   ├── SchemaTooNewError       the store was written by a newer labfolio
    │   └── StoreUnavailableError   the store could not be reached (retryable)
    ├── RunNotFoundError (+KeyError)                 no run with that id
    └── JournalError                a journal file is unreadable
"""

from __future__ import annotations

__all__ = [
    "LabfolioError",
    "NoActiveRunError",
    "MetricValueError",
    "MetricKeyError",
    "ConfigError",
    "StoreError",
    "SchemaTooNewError",
    "StoreUnavailableError",
    "RunNotFoundError",
    "JournalError",
]


class LabfolioError(Exception):
    """Base class of every error labfolio raises on purpose."""


class NoActiveRunError(LabfolioError, RuntimeError):
    """A module-level call (``labfolio.log`` …) was made before ``labfolio.init()``."""


class MetricValueError(LabfolioError, TypeError, ValueError):
    """A logged metric value is not a real number."""


class MetricKeyError(LabfolioError, ValueError):
    """A metric key is empty, not a string, or too long."""


class ConfigError(LabfolioError, ValueError):
    """Invalid arguments or settings."""


class StoreError(LabfolioError):
    """The store cannot be opened, read or written."""


class SchemaTooNewError(StoreError):
    """The store's schema is newer than this version of labfolio understands."""


class StoreUnavailableError(StoreError):
    """The store could not be reached right now; the operation may succeed later."""


class RunNotFoundError(LabfolioError, KeyError):
    """No run with the given id exists in the store."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0]) if self.args else "run not found"


class JournalError(LabfolioError):
    """A journal file could not be read."""
