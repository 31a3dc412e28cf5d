"""Results -> the tables and figures a paper prints. Never imports Ray."""

from analysis.tables import format_markdown, main_table

__all__ = ["format_markdown", "main_table"]
