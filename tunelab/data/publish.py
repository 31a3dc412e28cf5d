"""Publish a folder atomically: write it under a temporary sibling name, then rename it into place.

Rename is atomic within one filesystem, so a folder under its final name is always complete, and
writers racing for the same name are safe: the loser discards its copy and uses the winner's.
Permissions: the published folder is 0o755, readable by every user of a shared cache
(`tempfile.mkdtemp` would leave it 0o700); the files in it keep the process's umask.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

FOLDER_MODE = 0o755


def publish(final: Path, write: Callable[[Path], None]) -> None:
    """Call `write(folder)` on a fresh temporary folder, then rename it to `final`. When
    `final` already exists (another writer won), the copy is discarded. OSError propagates."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        tmp.chmod(FOLDER_MODE)
        write(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
