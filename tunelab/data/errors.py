"""The data errors more than one module raises, worded once."""

from __future__ import annotations

from pathlib import Path


def unwritable_cache(folder: Path, error: OSError) -> OSError:
    """The error for a cache folder that cannot be written, with the way out."""
    return OSError(
        f"cannot write the data cache in {folder} ({error.strerror or error}): "
        "set data.cache_dir or $TUNELAB_CACHE to a writable folder"
    )
