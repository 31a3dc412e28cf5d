"""Results -> the tables and figures a paper prints. Never imports Ray."""

from analysis.report import AnalysisError, Report, Sweep, build_report, load_sweep
from analysis.stats import Comparison, paired_comparison
from analysis.tables import class_tables, comparison_table, format_latex, threshold_table
from tunelab.summary import format_markdown, main_table

__all__ = [
    "AnalysisError",
    "Comparison",
    "Report",
    "Sweep",
    "build_report",
    "class_tables",
    "comparison_table",
    "format_latex",
    "format_markdown",
    "load_sweep",
    "main_table",
    "paired_comparison",
    "threshold_table",
]
