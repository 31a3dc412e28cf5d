"""Disk: a cache folder that cannot be written is a clear error naming it, not a hang."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# root writes through any permission bits, so as root the command runs as `nobody`
AS_USER = (
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
)


@pytest.mark.skipif(bool(AS_USER) and shutil.which("setpriv") is None, reason="needs setpriv")
def test_a_read_only_cache_folder_is_a_clear_error():
    if AS_USER:  # the unprivileged user must reach this checkout (a 0700 parent folder hides it)
        probe = [*AS_USER, sys.executable, "-c", "import tunelab"]
        if subprocess.run(probe, capture_output=True, timeout=60).returncode != 0:
            pytest.skip("the unprivileged user cannot import tunelab from this checkout's folder")
    folder = Path(tempfile.mkdtemp(prefix="tunelab-ro-"))
    try:
        folder.chmod(0o755)  # reachable by the unprivileged user
        cache = folder / "cache"
        cache.mkdir(mode=0o555)
        cache.chmod(0o555)  # read-only, whatever the umask
        env = {**os.environ, "TUNELAB_CACHE": str(cache), "HOME": str(folder)}
        command = [*AS_USER, sys.executable, "-m", "tunelab.train", "--set", "train.max_epochs=1"]
        out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert out.returncode == 2, out.stderr
    assert f"error: cannot write the data cache in {cache}" in out.stderr
    assert "set data.cache_dir or $TUNELAB_CACHE to a writable folder" in out.stderr
    assert "Traceback" not in out.stderr
