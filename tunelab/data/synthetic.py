"""Seeded synthetic stand-in for EBHI-Seg: H&E-like colon histology with gland masks.

The platform's embedded default dataset, so a fresh machine can run every study without real data.
It copies what the pipeline relies on: EBHI-Seg's folder layout, class names and imbalance, case
names (`SYN00042-1-400-003.png`) with several look-alike images per case (so grouped splits
matter), a mean foreground fraction of 0.6 (EBHI: 0.64) and class-dependent gland morphology.
Images are rendered as stain concentrations (Beer-Lambert, Ruifrok's H&E vectors): pink fibrous
stroma with scattered nuclei, glands with a dense rim of nuclei, pale or crowded interiors and
lumens, and in some images a blank slide corner. Greyscale intensity alone separates glands
poorly (dark stroma nuclei, pale gland interiors), while a small U-Net learns the masks.

Labels: binary task -> 0 / 255 (gland); multiclass (study B's background / tissue / tumour) ->
0 blank slide, 1 tissue (stroma, and the glands of Normal images), 2 glands of the other classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
from PIL import Image

from tunelab.config import Task
from tunelab.data.errors import unwritable_cache
from tunelab.data.publish import publish

VERSION = 1  # bump whenever the rendered pixels change, so cached copies are regenerated
CLASS_NAMES: tuple[str, ...] = (
    "Adenocarcinoma",
    "High-grade IN",
    "Low-grade IN",
    "Normal",
    "Polyp",
    "Serrated adenoma",
)
_REAL_COUNTS = np.array([438, 120, 369, 48, 277, 33])  # EBHI-Seg images per class
_MAX_CASE_IMAGES = 8
_H = np.array([0.65, 0.70, 0.29], np.float32)  # Ruifrok's optical-density stain vectors (RGB)
_E = np.array([0.07, 0.99, 0.11], np.float32)


@dataclass(frozen=True)
class _Morphology:
    """Class-dependent look; lengths are fractions of the image side, nuclei per pixel at 128^2."""

    fg: float  # mean foreground fraction
    radius: float  # gland half-width
    aspect: float  # gland length / width
    spacing: float  # grid step / gland size; < 1 makes glands fuse
    warp: float  # amplitude of the smooth distortion that makes outlines irregular
    disorder: float  # jitter of gland positions (x grid step) and orientations (radians)
    serration: float  # saw-tooth depth of the outline
    lumen: float  # lumen size relative to the gland
    holes: float  # cribriform holes in gland interiors (fraction of the interior)
    stroma: tuple[float, float]  # (H, E) stain of the stroma: sparse or cell-rich lamina propria
    interior: tuple[float, float]  # (H, E) stain of the gland interior: pale mucin or crowded cells
    nuclei: tuple[float, float, float]  # nuclei density in stroma, gland rim, gland interior
    nucleus: float  # nucleus radius in px at 128^2


# fmt: off
_MORPHOLOGY: dict[str, _Morphology] = {
    # large fused irregular masses of crowded dark cells with cribriform holes
    "Adenocarcinoma": _Morphology(
        fg=0.64, radius=0.17, aspect=1.4, spacing=0.9, warp=0.07, disorder=0.25, serration=0,
        lumen=0, holes=0.25,
        stroma=(0.25, 0.5), interior=(0.85, 0.45), nuclei=(0.03, 0.16, 0.08), nucleus=1.35),
    # irregular crowded glands, large dark nuclei, slit lumens
    "High-grade IN": _Morphology(
        fg=0.66, radius=0.11, aspect=1.6, spacing=1.0, warp=0.045, disorder=0.22, serration=0,
        lumen=0.1, holes=0,
        stroma=(0.25, 0.5), interior=(0.8, 0.4), nuclei=(0.03, 0.17, 0.07), nucleus=1.45),
    # slightly irregular glands, denser nuclei than normal
    "Low-grade IN": _Morphology(
        fg=0.62, radius=0.12, aspect=1.7, spacing=1.1, warp=0.03, disorder=0.15, serration=0,
        lumen=0.18, holes=0,
        stroma=(0.45, 0.65), interior=(0.65, 0.45), nuclei=(0.035, 0.15, 0.04), nucleus=1.15),
    # regular round crypts, evenly spaced, pale mucin interior and a central lumen
    "Normal": _Morphology(
        fg=0.60, radius=0.11, aspect=1.15, spacing=1.2, warp=0.01, disorder=0.06, serration=0,
        lumen=0.3, holes=0,
        stroma=(0.35, 0.6), interior=(0.45, 0.3), nuclei=(0.045, 0.14, 0.01), nucleus=1.0),
    # elongated finger-like glands in parallel
    "Polyp": _Morphology(
        fg=0.52, radius=0.085, aspect=3.2, spacing=1.25, warp=0.02, disorder=0.1, serration=0,
        lumen=0.25, holes=0,
        stroma=(0.45, 0.65), interior=(0.7, 0.45), nuclei=(0.045, 0.14, 0.015), nucleus=1.05),
    # saw-tooth outlines and star-shaped lumens
    "Serrated adenoma": _Morphology(
        fg=0.58, radius=0.12, aspect=1.5, spacing=1.2, warp=0.02, disorder=0.12, serration=0.2,
        lumen=0.38, holes=0,
        stroma=(0.5, 0.7), interior=(0.6, 0.4), nuclei=(0.04, 0.15, 0.02), nucleus=1.1),
}
# fmt: on


@dataclass(frozen=True)
class _Style:
    """What the images of one case share: stain, scale, density, orientation."""

    stains: np.ndarray  # (2, 3): jittered H and E vectors
    strength: np.ndarray  # (2,): H and E concentration scales
    size: float  # gland size factor
    density: float  # nuclei density factor
    fg_offset: float  # shifts the foreground fraction of all the case's images
    gap: float  # strength of the retraction artefact around glands
    angle: float  # main gland orientation (radians)


def class_counts(n_images: int) -> list[int]:
    """Images per class in EBHI-Seg's proportions (largest remainder), at least 2 per class."""
    if n_images < 2 * len(CLASS_NAMES):
        raise ValueError(
            f"n_images must be >= {2 * len(CLASS_NAMES)} (2 per class), got {n_images}"
        )
    exact = _REAL_COUNTS / _REAL_COUNTS.sum() * n_images
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[: n_images - counts.sum()]] += 1
    while counts.min() < 2:  # take the minority's share from the majority
        counts[counts.argmin()] += 1
        counts[counts.argmax()] -= 1
    return counts.tolist()


def _case_sizes(rng: np.random.Generator, total: int) -> list[int]:
    """Split `total` images into cases of 1..8 images (geometric, mean about 3.5)."""
    sizes: list[int] = []
    while sum(sizes) < total:
        sizes.append(min(int(rng.geometric(0.28)), _MAX_CASE_IMAGES, total - sum(sizes)))
    return sizes


def _draw_style(rng: np.random.Generator) -> _Style:
    """One case's look: per-lab stain vectors and strengths, a patient's gland size and density."""
    stains = np.stack([_H, _E]) + rng.normal(0, 0.06, (2, 3)).astype(np.float32)
    stains = np.clip(stains, 0.02, None)
    return _Style(
        stains=stains / np.linalg.norm(stains, axis=1, keepdims=True),
        strength=rng.uniform([0.75, 0.6], [1.25, 1.3]).astype(np.float32),
        size=float(rng.uniform(0.8, 1.25)),
        density=float(rng.uniform(0.7, 1.4)),
        fg_offset=float(rng.normal(0, 0.05)),
        gap=float(rng.uniform(0, 0.8)),
        angle=float(rng.uniform(0, np.pi)),
    )


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Unit-ish noise varying over about `cells` bumps per side, (size, size) float32."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def _gland_centres(rng: np.random.Generator, m: _Morphology, s: _Style) -> np.ndarray:
    """Jittered hexagonal grid of gland centres, rotated, covering the image plus a margin."""
    width = 2 * m.radius * s.size
    step = np.array([width * m.aspect, width]) * m.spacing  # (along, across) the gland axis
    reach = 0.75 + step.max()
    rows = np.arange(-reach, reach, step[1])
    cols = np.arange(-reach, reach, step[0])
    u = cols[None, :] + (np.arange(len(rows)) % 2)[:, None] * step[0] / 2
    v = np.broadcast_to(rows[:, None], u.shape)
    pts = np.stack([u.ravel(), v.ravel()], 1) + rng.normal(0, m.disorder, (u.size, 2)) * step
    angle = s.angle + rng.normal(0, 0.2)  # each image is a differently rotated field of view
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    pts = pts @ rot.T + 0.5
    margin = width * m.aspect / 2
    return pts[np.all((pts > -margin) & (pts < 1 + margin), axis=1)]


def _gland_field(rng: np.random.Generator, m: _Morphology, s: _Style, size: int) -> np.ndarray:
    """Normalised distance to the nearest gland outline (1 on its nominal border), (size, size).

    Computed at half resolution and upsampled: the field is smooth, and this is the costly step.
    """
    centres = _gland_centres(rng, m, s).astype(np.float32)  # (K, 2) as (x, y)
    k, n = len(centres), size // 2
    grid = (np.arange(n, dtype=np.float32) + 0.5) / n
    wx, wy = (m.warp * _smooth_noise(rng, n, 5) for _ in range(2))
    dx = grid[None, None, :] + wx[None] - centres[:, 0, None, None]  # (K, n, n)
    dy = grid[None, :, None] + wy[None] - centres[:, 1, None, None]
    angle = (s.angle + rng.normal(0, m.disorder, k)).astype(np.float32)[:, None, None]
    half = m.radius * s.size * rng.uniform(0.8, 1.2, (2, k)).astype(np.float32)
    along = (dx * np.cos(angle) + dy * np.sin(angle)) / (half[0] * m.aspect)[:, None, None]
    across = (dy * np.cos(angle) - dx * np.sin(angle)) / half[1][:, None, None]
    dist = np.sqrt(along**2 + across**2)
    if m.serration:  # saw-tooth radius: the outline juts out once per tooth
        teeth = rng.integers(7, 11, k)[:, None, None]
        saw = (np.arctan2(across, along) * teeth / (2 * np.pi)) % 1.0
        dist *= 1 - m.serration * saw
    return cv2.resize(dist.min(axis=0), (size, size), interpolation=cv2.INTER_LINEAR)


def _blank_corner(rng: np.random.Generator, size: int) -> np.ndarray:
    """Empty slide area in about a third of the images: a wavy cut across one corner."""
    blank = np.zeros((size, size), bool)
    if rng.random() < 0.33:
        grid = (np.arange(size) + 0.5) / size
        flip_x, flip_y = rng.integers(0, 2, 2)
        x = grid[None, :] if not flip_x else 1 - grid[None, :]
        y = grid[:, None] if not flip_y else 1 - grid[:, None]
        edge = rng.uniform(0.3, 0.75) + 0.06 * _smooth_noise(rng, size, 4)
        blank = x + y < edge
    return blank


def _nuclei(rng: np.random.Generator, density: np.ndarray, radius: float) -> np.ndarray:
    """Dark blobs at Bernoulli(density) pixels, saturating to ~1 at their core."""
    strength = 0.6 + 0.8 * rng.random(density.shape, np.float32)
    seeds = (rng.random(density.shape, np.float32) < density) * strength
    sigma = radius / 1.4
    blobs = cv2.GaussianBlur(seeds, (0, 0), sigma)
    # a blurred unit impulse peaks at 1 / (2 pi sigma^2): this gain saturates the cores
    return 1 - np.exp(-blobs * 2.5 * np.pi * sigma**2)


def _fibres(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Fibrous texture of stroma: unit-std noise stretched along a random direction."""
    noise = rng.standard_normal((size, size), np.float32)
    fibres = cv2.GaussianBlur(noise, (0, 0), sigmaX=3 * scale, sigmaY=0.6 * scale)
    turn = cv2.getRotationMatrix2D((size / 2, size / 2), float(rng.uniform(0, 180)), 1.0)
    fibres = cv2.warpAffine(fibres, turn, (size, size), borderMode=cv2.BORDER_REFLECT)
    return fibres / (fibres.std() + 1e-6)


class _Regions(NamedTuple):
    """Boolean (size, size) masks of the tissue compartments of one image."""

    glands: np.ndarray
    blank: np.ndarray  # empty slide
    rim: np.ndarray  # epithelium along the gland border: palisade of nuclei
    inner: np.ndarray  # gland interior: mucin or crowded cells
    lumen: np.ndarray
    stroma: np.ndarray
    gap: np.ndarray  # retraction artefact: thin pale line just outside the glands


def _regions(rng: np.random.Generator, m: _Morphology, s: _Style, size: int) -> _Regions:
    """Lay out glands, lumens, rims and stroma; lengths in px at 128^2, scaled to `size`."""
    scale = size / 128
    blank = _blank_corner(rng, size)
    field = _gland_field(rng, m, s, size)
    field[blank] = np.inf
    target = np.clip(m.fg + s.fg_offset + rng.normal(0, 0.06), 0.3, 0.85)
    target = min(target, 0.9 * (1 - blank.mean()))
    # threshold the field at the target quantile: scales all glands to the sampled fg fraction
    nth = int(target * field.size)
    level = np.partition(field.ravel(), nth)[nth]
    glands = field < level
    depth = cv2.distanceTransform(glands.astype(np.uint8), cv2.DIST_L2, 3) / scale
    outside = cv2.distanceTransform((~glands).astype(np.uint8), cv2.DIST_L2, 3) / scale
    rim = glands & (depth < 4.5)
    lumen = glands & (field < level * m.lumen * rng.uniform(0.7, 1.3))
    if m.holes:
        holes = _smooth_noise(rng, size, int(10 * scale) + 2) > 1.4 - 2 * m.holes
        lumen |= glands & (depth > 6) & holes
    stroma = ~glands & ~blank
    gap = stroma & (outside < 1.5)
    return _Regions(glands, blank, rim, glands & ~rim & ~lumen, lumen, stroma, gap)


def _stains(
    rng: np.random.Generator, m: _Morphology, s: _Style, r: _Regions
) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin and eosin concentrations, (size, size) float32 each."""
    size = r.glands.shape[0]
    scale = size / 128
    stroma, rim, inner, lumen = (x.astype(np.float32) for x in (r.stroma, r.rim, r.inner, r.lumen))
    stroma_d, rim_d, inner_d = (d * s.density / scale**2 for d in m.nuclei)
    nuclei = _nuclei(rng, stroma_d * stroma + rim_d * rim + inner_d * inner, m.nucleus * scale)
    fibres = _fibres(rng, size, scale)
    mottle = cv2.GaussianBlur(rng.standard_normal((size, size), np.float32), (0, 0), scale)
    # rim: palisade of epithelium, the darkest tissue; lumen: nearly empty
    h = m.stroma[0] * stroma + 1.0 * rim + m.interior[0] * inner + 0.05 * lumen + 1.3 * nuclei
    e = (m.stroma[1] + 0.2 * fibres) * stroma + 0.5 * rim + m.interior[1] * inner + 0.08 * lumen
    e += 0.08 * mottle * (rim + inner) + 0.2 * nuclei
    pale = 1 - s.gap * r.gap
    return h * pale, e * pale


def _render(
    rng: np.random.Generator, m: _Morphology, s: _Style, size: int
) -> tuple[np.ndarray, _Regions]:
    """One image: RGB (size, size, 3) uint8 and its regions."""
    regions = _regions(rng, m, s, size)
    h, e = _stains(rng, m, s, regions)
    light = 1 + 0.12 * _smooth_noise(rng, size, 2)  # uneven illumination and section thickness
    conc = np.stack([h, e], axis=-1) * light[..., None]  # (size, size, 2)
    od = conc @ (s.strength[:, None] * s.stains)  # Beer-Lambert: optical densities add, (.., 3)
    od += 0.03 + 0.02 * rng.standard_normal(od.shape, np.float32)
    od = cv2.GaussianBlur(od, (0, 0), 0.6 * size / 128)  # optical blur
    rgb = np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8)
    return rgb, regions


def _label(r: _Regions, class_name: str, task: Task) -> np.ndarray:
    """Binary: 255 on glands. Multiclass: 0 blank slide, 1 tissue, 2 glands unless Normal."""
    if task == "binary":
        return r.glands.astype(np.uint8) * 255
    tumour = r.glands & (class_name != "Normal")
    return np.where(r.blank, 0, np.where(tumour, 2, 1)).astype(np.uint8)


def _write_case(
    root: Path, class_name: str, case: int, n_images: int, seed: int, size: int, task: Task
) -> None:
    """Render one case's images: one style (SeedSequence keyed by case), one stream per image."""
    morph = _MORPHOLOGY[class_name]
    style = _draw_style(np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(case,))))
    for k in range(1, n_images + 1):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(case, k)))
        rgb, regions = _render(rng, morph, style, size)
        name = f"SYN{case:05d}-1-400-{k:03d}.png"
        # zlib level 1: a third of the level-6 encoding time, and the files are a cache anyway
        Image.fromarray(rgb, "RGB").save(root / class_name / "image" / name, compress_level=1)
        label = Image.fromarray(_label(regions, class_name, task), "L")
        label.save(root / class_name / "label" / name, compress_level=1)


def generate(
    root: Path, n_images: int, seed: int = 0, size: int = 128, task: Task = "binary"
) -> Path:
    """Write the dataset under root (created), return root. Same arguments -> identical bytes.

    Cases are numbered across classes (SYN00001, ...); the task changes only the labels, so the
    binary and multiclass datasets of one seed share their images. Identical bytes hold on one
    machine and library stack: SIMD code paths elsewhere may round floats differently.
    """
    if task not in ("binary", "multiclass"):
        raise ValueError(f"task must be 'binary' or 'multiclass', got {task!r}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    root = Path(root)
    layout = np.random.default_rng(seed)
    case = 0
    for class_name, count in zip(CLASS_NAMES, class_counts(n_images), strict=True):
        for folder in ("image", "label"):
            (root / class_name / folder).mkdir(parents=True, exist_ok=True)
        for case_images in _case_sizes(layout, count):
            case += 1
            _write_case(root, class_name, case, case_images, seed, size, task)
    return root


def ensure_synthetic(
    cache_dir: Path, n_images: int, seed: int = 0, size: int = 128, task: Task = "binary"
) -> Path:
    """Generate once into cache_dir and return the dataset's path; safe under concurrent callers.

    Each caller renders into its own temporary folder, published atomically
    (`tunelab.data.publish`): a folder under the final name is always complete, and a caller
    that loses the race uses the winner's.
    """
    cache_dir = Path(cache_dir)
    final = cache_dir / f"synthetic-{task}-{n_images}-{size}-s{seed}-v{VERSION}"
    if final.is_dir():
        return final
    try:
        publish(final, lambda folder: generate(folder, n_images, seed, size, task))
    except OSError as error:
        raise unwritable_cache(cache_dir, error) from error
    return final
