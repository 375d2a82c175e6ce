"""Analysis of results tables: summaries, data-quality checks, comparisons and the report.

Pure functions over pyarrow tables (read one with :func:`phasetime.results.read`); no
torch is imported here, so analysing results is fast and works anywhere.

    table = phasetime.results.read("results/run")
    cells = phasetime.analysis.summarize(table)           # list[CellSummary]
    checks = phasetime.analysis.check(table)              # list[CheckResult]
    keys, rows = phasetime.analysis.compare(table_a, table_b)
"""

from __future__ import annotations

from .checks import CheckResult, Thresholds, failed
from .checks import run_checks as check
from .compare import PhaseComparison, compare_methods
from .compare import compare_runs as compare
from .summary import CellSummary, PhaseStats, summarize

__all__ = ["CellSummary", "CheckResult", "PhaseComparison", "PhaseStats", "Thresholds", "check", "compare",
           "compare_methods", "failed", "summarize"]
