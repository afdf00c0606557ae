"""Comparing many mixture runs: results from each run's output URI, a leaderboard, a RegMix-style
mixture recommendation, and a report (markdown, PNGs, self-contained HTML) in object storage.

A sweep runner calls `compare_runs([sweep_output_uri], rank_by="eval.average")`."""

from trainkit.compare.leaderboard import (
    DEFAULT_METRIC,
    Metric,
    Row,
    available_metrics,
    favoured,
    leaderboard,
    parse_metric,
)
from trainkit.compare.recommend import Recommendation, recommend, recommend_from
from trainkit.compare.report import Report, build_report, compare_runs, default_output, write_report
from trainkit.compare.results import (
    CompareError,
    RunResult,
    collect_runs,
    discover_runs,
    load_run_results,
    run_result_from,
)

__all__ = [
    "DEFAULT_METRIC",
    "CompareError",
    "Metric",
    "Recommendation",
    "Report",
    "Row",
    "RunResult",
    "available_metrics",
    "build_report",
    "collect_runs",
    "compare_runs",
    "default_output",
    "discover_runs",
    "favoured",
    "leaderboard",
    "load_run_results",
    "parse_metric",
    "recommend",
    "recommend_from",
    "run_result_from",
    "write_report",
]
