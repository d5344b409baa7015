"""Errors raised by labfolio's analysis layer.

They extend ``labfolio.errors``, so a caller (or the CLI) that catches ``LabfolioError`` or
``ValueError`` also catches these::

    ConfigError (LabfolioError, ValueError)
    └── AnalysisInputError       runs, series or options that analysis cannot use
        ├── RangeSyntaxError     a health-rule range such as '< 0.2' that cannot be read
        └── RulesFileError       a project rules file (.labfolio/rules.yaml, pyproject) that is wrong
"""

from __future__ import annotations

from labfolio.errors import ConfigError

__all__ = ["AnalysisInputError", "RangeSyntaxError", "RulesFileError"]


class AnalysisInputError(ConfigError):
    """Runs, series or options passed to an analysis function cannot be used as given."""


class RangeSyntaxError(AnalysisInputError):
    """A health-rule range (good or bad value) could not be read."""


class RulesFileError(AnalysisInputError):
    """A project rules file or table names an unknown field, pack or value."""
