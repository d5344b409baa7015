"""labfolio's analysis layer: pure functions over runs and metric series, no store involved.

- seed statistics and verdicts against a baseline (``seed_statistics``, ``compare_samples``);
- config diffs (``diff_configs``, ``diff_variants``, ``diff_experiments``);
- health rules (``Rule``, ``evaluate_rules``, built-in packs, project files, Markdown table);
- pathology detectors, post hoc (``detect_all``) and live (``LiveMonitor``);
- a proposed run status (``propose_status``);
- stable text for the CLI (``format_comparison_table``, ``format_config_diff``, ``check_run``,
  ``format_check``).

Inputs are plain data: ``RunView`` for a run, and ``{key: (steps, values)}`` for series.
"""

from labfolio.analysis.alerts import Alert, AlertKind, Severity
from labfolio.analysis.detectors import DetectorOptions
from labfolio.analysis.diff import (
    DEFAULT_IGNORE,
    Change,
    ConfigDiff,
    diff_configs,
    diff_experiments,
    diff_runs,
    diff_variants,
    inconsistent_variant_keys,
)
from labfolio.analysis.errors import AnalysisInputError, RangeSyntaxError, RulesFileError
from labfolio.analysis.monitor import LiveMonitor, classify_key, detect_all
from labfolio.analysis.ranges import Range, parse_range
from labfolio.analysis.report import (
    CheckReport,
    check_run,
    format_check,
    format_comparison_table,
    format_config_diff,
)
from labfolio.analysis.rulefiles import (
    MetricsTable,
    extra_rules,
    format_metrics_table,
    load_project_rules,
    parse_metrics_table,
    parse_rules_config,
    resolve_rules,
)
from labfolio.analysis.rules import (
    GENERAL_RULES,
    MHC_RULES,
    RULE_PACKS,
    Health,
    Rule,
    RuleResult,
    builtin_rules,
    evaluate_rule,
    evaluate_rules,
    merge_rules,
)
from labfolio.analysis.runs import RunView, described_runs, exclusion_reason, exclusion_reasons
from labfolio.analysis.schedule import ScheduleSpec, schedule_from_config
from labfolio.analysis.sharing import SharedThroughput, shared_throughput
from labfolio.analysis.stats import (
    Comparison,
    ExcludedRun,
    LuckyRun,
    MetricSummary,
    SeedReport,
    VariantStats,
    Verdict,
    compare_samples,
    find_lucky_runs,
    format_mean_std,
    metric_direction,
    seed_statistics,
    summarize,
)
from labfolio.analysis.status import RunStatus, StatusProposal, propose_status

__all__ = [
    # runs and results
    "RunView",
    "exclusion_reason",
    "exclusion_reasons",
    "described_runs",
    "Alert",
    "AlertKind",
    "Severity",
    "AnalysisInputError",
    "RangeSyntaxError",
    "RulesFileError",
    # runs sharing a device
    "shared_throughput",
    "SharedThroughput",
    # seed statistics
    "seed_statistics",
    "summarize",
    "compare_samples",
    "find_lucky_runs",
    "metric_direction",
    "format_mean_std",
    "SeedReport",
    "VariantStats",
    "MetricSummary",
    "Comparison",
    "Verdict",
    "LuckyRun",
    "ExcludedRun",
    # config diffs
    "diff_configs",
    "diff_runs",
    "diff_variants",
    "diff_experiments",
    "inconsistent_variant_keys",
    "ConfigDiff",
    "Change",
    "DEFAULT_IGNORE",
    # rules
    "Rule",
    "RuleResult",
    "Health",
    "Range",
    "parse_range",
    "evaluate_rule",
    "evaluate_rules",
    "builtin_rules",
    "merge_rules",
    "MHC_RULES",
    "GENERAL_RULES",
    "RULE_PACKS",
    "load_project_rules",
    "parse_rules_config",
    "resolve_rules",
    "extra_rules",
    "parse_metrics_table",
    "format_metrics_table",
    "MetricsTable",
    # detectors and live vigilance
    "detect_all",
    "LiveMonitor",
    "DetectorOptions",
    "classify_key",
    "ScheduleSpec",
    "schedule_from_config",
    # status and reports
    "RunStatus",
    "StatusProposal",
    "propose_status",
    "check_run",
    "CheckReport",
    "format_check",
    "format_comparison_table",
    "format_config_diff",
]
