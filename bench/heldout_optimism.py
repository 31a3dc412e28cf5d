"""How optimistic were tables built on the validation split? One finished sweep, both numbers.

    python bench/heldout_optimism.py runs/ebhi_table1

Per arm: the mean IoU on the validation split at each trial's last epoch (what every table
printed before held-out evaluation: the split that also stopped and selected the trials),
beside the mean test IoU of the best-validation checkpoint, their difference, and each arm's
rank by either. Writes `heldout_optimism.md` into the sweep folder and prints it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tunelab.results import RESULTS_FILE, SCORED_STATUSES


def optimism_table(results: pd.DataFrame, metric: str = "iou") -> pd.DataFrame:
    scored = results[results["primary"] & results["status"].isin(SCORED_STATUSES)]
    table = scored.groupby("arm", sort=False).agg(
        n=(metric, "size"),
        validation=(metric, "mean"),
        test=(f"test_{metric}", "mean"),
        tested_epoch=("checkpoint_epoch", "mean"),
        last_epoch=("epochs", "mean"),
    )
    table["optimism"] = table["validation"] - table["test"]
    table["rank_validation"] = table["validation"].rank(ascending=False)
    table["rank_test"] = table["test"].rank(ascending=False)
    return table.reset_index()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a sweep folder holding results.parquet")
    args = parser.parse_args(argv)
    folder = Path(args.sweep)
    table = optimism_table(pd.read_parquet(folder / RESULTS_FILE))
    lines = [
        "| Arm | n | validation IoU, last epoch | test IoU, best-validation epoch | "
        "validation - test | tested / last epoch (mean) | rank (validation, test) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples():
        lines.append(
            f"| {row.arm} | {row.n} | {row.validation:.4f} | {row.test:.4f} | "
            f"{row.optimism:+.4f} | {row.tested_epoch:.1f} / {row.last_epoch:.1f} | "
            f"{row.rank_validation:.0f}, {row.rank_test:.0f} |"
        )
    order_kept = list(table.sort_values("validation", ascending=False)["arm"]) == list(
        table.sort_values("test", ascending=False)["arm"]
    )
    lines.append("")
    lines.append(f"Order of the arms {'unchanged' if order_kept else 'changed'} by the test set.")
    text = "\n".join(lines) + "\n"
    (folder / "heldout_optimism.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
