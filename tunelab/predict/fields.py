"""`--receptive-field`: an arm's theoretical and effective receptive fields, as a table and a
figure (see `tunelab.receptive_field`).

The effective field is averaged over the arm's models, at an input large enough to hold the
whole theoretical field: for a zero input (study B's probe) and, when images are given, for
those images resized to that size and normalised as in training.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from tunelab import receptive_field as rf
from tunelab.data.batches import normalize
from tunelab.predict.ensemble import Ensemble
from tunelab.predict.images import Found, read_image, resize

PROBE_IMAGES = 16  # images averaged over for the effective field
FIELD_FILES = ("receptive_field.csv", "receptive_field.png")


def write_fields(ensemble: Ensemble, images: list[Found], out: Path) -> str:
    """Write `receptive_field.csv` and `receptive_field.png` into `out`; a one-line summary."""
    cfg = ensemble.cfg
    side = rf.probe_size(cfg.model)
    probes = {"zero input": [torch.zeros(1, cfg.data.channels, side, side)] * len(ensemble.members)}
    pixels: list[np.ndarray] = []
    for found in images:
        try:
            pixels.append(read_image(found.path, cfg.data.channels)[0])
        except (OSError, SyntaxError, ValueError):
            continue  # unreadable: the prediction run reports those
        if len(pixels) == PROBE_IMAGES:
            break
    if pixels:
        batch = np.stack([resize(p, side) for p in pixels]).transpose(0, 3, 1, 2)
        probes["images"] = [normalize(batch, m.mean, m.std) for m in ensemble.members]
    maps = {}
    for name, inputs in probes.items():
        per_model = [
            rf.gradient_map(model.float().cpu(), x)
            for model, x in zip(ensemble.models, inputs, strict=True)
        ]
        maps[name] = np.mean(per_model, axis=0)
    theoretical = rf.theoretical(cfg.model)
    row = {
        "arm": ensemble.members[0].arm,
        "models": len(ensemble.members),
        "depth": cfg.model.depth,
        "theoretical": theoretical,
        "theoretical_at_centre": rf.support_of(rf.field_at(cfg.model, side // 2)),
        **{f"effective_95 ({name})": rf.extent(grad) for name, grad in maps.items()},
        **{f"non-zero ({name})": rf.support(grad) for name, grad in maps.items()},
    }
    table, image = FIELD_FILES
    pd.DataFrame([row]).to_csv(out / table, index=False)
    figure(maps, theoretical, side).savefig(out / image, dpi=100)
    effective = ", ".join(f"{rf.extent(g)} px ({name})" for name, g in maps.items())
    return (
        f"receptive field of {row['arm']!r}: theoretical {theoretical} px (up to; "
        f"{row['theoretical_at_centre']} at the centre pixel), effective (95% of the gradient) "
        f"{effective}"
    )


def figure(maps: dict[str, np.ndarray], theoretical: int, side: int) -> Figure:
    """One panel per probe: |gradient| (log scale), the theoretical square dashed and the
    95% square solid."""
    fig = Figure(figsize=(4 * len(maps), 4.2), layout="constrained")
    for ax, (name, grad) in zip(
        fig.subplots(1, len(maps), squeeze=False)[0], maps.items(), strict=True
    ):
        shown = np.log10(grad + grad.max() * 1e-6 + 1e-30)
        ax.imshow(shown, cmap="magma")
        centre = side // 2
        for size, style in ((theoretical, "--"), (rf.extent(grad), "-")):
            corner = centre - size // 2 - 0.5
            ax.add_patch(
                Rectangle((corner, corner), size, size, fill=False, ls=style, color="cyan")
            )
        ax.set_title(
            f"{name}: 95% in {rf.extent(grad)} px, theoretical {theoretical}", fontsize="small"
        )
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
