"""The one error analysis raises for input it cannot use, importable by every analysis module
(`analysis.report` re-exports it, where callers have always found it)."""


class AnalysisError(ValueError):
    """The sweep cannot be analysed as asked (missing file, unknown arm); the message says why."""
