"""Does a trial's data start-up grow with the dataset? A cached trial start at 1x and 8x a
dataset, with the fingerprint handed over by the driver (what a sweep does) and without it.

8x is 8 copies of the same files under other names (symbolic links, so no extra disk). Each
size is loaded once first (decode, cache; the driver's job), then `prepare(cfg)` is timed the way
a trial runs it: with `fingerprints` from the driver, and without (every file listed and hashed).

    python -m bench.data_startup ../shared/data/ebhi-seg [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.common import save
from tunelab.config import TrialConfig
from tunelab.data import load, prepare


def copies(source: Path, target: Path, times: int) -> Path:
    """`times` copies of an ebhi-layout dataset as symbolic links, each file under a new name."""
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        for kind in ("image", "label"):
            folder = target / class_dir.name / kind
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted((class_dir / kind).iterdir()):
                for copy in range(times):
                    (folder / f"C{copy}{path.name}").symlink_to(path.resolve())
    return target


def timed(run: Callable[[], object], repeats: int) -> float:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for times in (1, 8):
            root = copies(Path(args.data), Path(folder) / f"x{times}", times)
            cfg = TrialConfig.from_dict(
                {"data.root": str(root), "data.input_size": 32, "data.cache_dir": f"{folder}/cache"}
            )
            start = time.perf_counter()
            driver = load(cfg.data)  # decode and cache, once
            first = time.perf_counter() - start
            start = time.perf_counter()
            load(cfg.data)  # what the driver does at the next sweep: list and hash
            hash_s = time.perf_counter() - start
            fingerprints = {driver.root: driver.fingerprint}
            row = {
                "copies": times,
                "images": len(driver.images),
                "first_load_s": first,
                "driver_hash_s": hash_s,
                "cache_open_given_s": timed(partial(load, cfg.data, fingerprints), args.repeats),
                "cache_open_hashing_s": timed(partial(load, cfg.data), args.repeats),
                "prepare_given_s": timed(partial(prepare, cfg, 1, fingerprints), args.repeats),
                "prepare_hashing_s": timed(partial(prepare, cfg, 1), args.repeats),
            }
            rows.append(row)
            print(
                f"{times}x ({row['images']} images): driver hash {hash_s:.2f} s; opening the "
                f"cache {row['cache_open_given_s'] * 1e3:.2f} ms with the fingerprint, "
                f"{row['cache_open_hashing_s']:.3f} s hashing; whole prepare "
                f"{row['prepare_given_s']:.3f} s with it, {row['prepare_hashing_s']:.3f} s hashing",
                flush=True,
            )
    ratio = rows[1]["cache_open_given_s"] / rows[0]["cache_open_given_s"]
    print(f"8x / 1x cache opening with the fingerprint: {ratio:.2f}")
    save("data_startup", {"rows": rows, "ratio_8x_1x": ratio})


if __name__ == "__main__":
    main()
