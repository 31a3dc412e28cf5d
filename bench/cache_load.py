"""First (decode + write) vs second (cached) load of a dataset, into a fresh cache folder.

python bench/cache_load.py --data ../shared/data/ebhi-seg [--size 64] [--channels 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.common import save
from tunelab.config import DataConfig
from tunelab.data import load
from tunelab.data.cache import fingerprint
from tunelab.data.scan import scan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        cfg = DataConfig(
            root=args.data, input_size=args.size, channels=args.channels, cache_dir=cache
        )
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            loaded = load(cfg)
            timings.append(time.perf_counter() - start)
        start = time.perf_counter()
        fingerprint(scan(Path(args.data)))
        fingerprint_s = time.perf_counter() - start
    first, second = timings
    print(f"{len(loaded.images)} images at {args.size}x{args.size}x{args.channels}")
    print(f"first load {first:.2f} s, second {second:.2f} s ({first / second:.1f}x faster)")
    print(f"of which content fingerprint {fingerprint_s:.2f} s")
    path = save(
        "cache_load",
        {
            "data": args.data,
            "size": args.size,
            "channels": args.channels,
            "images": len(loaded.images),
            "first_s": first,
            "second_s": second,
            "fingerprint_s": fingerprint_s,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
