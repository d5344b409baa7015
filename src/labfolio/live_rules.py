"""Which rules a run's live checks judge: the project's (or the caller's), plus a spec's.

``labfolio run`` hands a spec's ``rules:`` to each child as ``$LABFOLIO_RULES``; they replace the
project rule of the same metric. A broken rules file or variable warns and never stops a run.
"""

from __future__ import annotations

import os
import warnings

from .settings import find_project_root

__all__ = ["live_monitor", "env_rules"]


def live_monitor(config: dict, rules):
    """The run's live checks: the project's rules (or `rules`) and every pathology detector."""
    from .analysis import LiveMonitor, RulesFileError, builtin_rules, load_project_rules, merge_rules

    if rules is None:
        try:
            rules = load_project_rules(find_project_root())
        except (RulesFileError, OSError, ValueError) as exc:  # a broken rules file never stops a run
            warnings.warn(f"labfolio: {exc}; live checks use the built-in rules until it is fixed.",
                          RuntimeWarning)
            rules = builtin_rules()
        rules = merge_rules(rules, env_rules())
    try:
        return LiveMonitor(config, list(rules))
    except Exception as exc:  # a config the checks cannot read must not stop the run
        warnings.warn(f"labfolio: live checks are off for this run ({exc!r}); `labfolio check` "
                      "runs them afterwards.", RuntimeWarning)
        return None


def env_rules() -> list:
    """Extra rules from ``$LABFOLIO_RULES`` (JSON: a rules document as in rules.yaml, or a list of
    rule tables); ``labfolio run`` passes a spec's ``rules:`` to its runs this way."""
    text = os.environ.get("LABFOLIO_RULES")
    if not text:
        return []
    import json

    from .analysis import RulesFileError, extra_rules

    try:
        return extra_rules(json.loads(text), "$LABFOLIO_RULES")
    except (ValueError, RulesFileError) as exc:
        warnings.warn(f"labfolio: ignoring $LABFOLIO_RULES ({exc}); set it to JSON such as "
                      '[{"metric": "grad_norm", "bad": "> 50"}].', RuntimeWarning)
        return []
