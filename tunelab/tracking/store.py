"""Which MLflow store a sweep logs to, whether it can be written, and how to open its UI."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path


class TrackingError(RuntimeError):
    """MLflow cannot be used as asked (e.g. the tracking server does not answer)."""


def tracking_uri(explicit: str | None = None) -> str:
    """`explicit`, else $MLFLOW_TRACKING_URI, else ./mlflow.db: where `mlflow ui` looks."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}  (then open http://127.0.0.1:5000)"


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail before any trial starts if the store cannot be written: name the URI and the fix."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
                return
        except (urllib.error.URLError, OSError) as error:
            raise TrackingError(
                f"MLflow tracking server {uri} does not answer ({error}); start it, e.g. "
                "`mlflow server --host 127.0.0.1 --port 5000`, or drop --mlflow-uri to log to "
                "./mlflow.db"
            ) from error
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not os.access(folder, os.W_OK):
            raise TrackingError(f"cannot write the MLflow store {uri}: {folder} is not writable")
