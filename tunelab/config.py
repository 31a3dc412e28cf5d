"""TrialConfig: the one typed object that fully describes a trial.

The model, optimiser and loss defaults are study A's baseline (64x64 greyscale, U-Net with 64
base channels, Adam lr 1e-4, batch 32, BCE on sigmoid outputs). Not study A's: `data.split` is
by case (study A split images at random), `train.precision` is auto (study A: fp32), and the
evaluation defaults are study B's (20% of the cases held out as a test set, scored with the
best-validation checkpoint).
Search spaces, MLflow params and analysis columns all use the same dotted names
(`model.dropout`), produced by `to_flat` and accepted by `from_dict`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_type_hints

from tunelab.config_values import coerce, flatten

Task = Literal["binary", "multiclass"]
SplitMode = Literal["case", "image"]
Augment = Literal["none", "flip_rotate_scale", "crop_flip"]
Normalize = Literal["fixed", "dataset"]
SkipMode = Literal["concat", "none", "avgpool"]
DropoutPlacement = Literal["decoder", "all"]
Norm = Literal["none", "batch"]
Activation = Literal["relu", "leaky_relu"]
# the loss names `tunelab.losses.LOSSES` registers (a registry test checks they agree); the
# first three need one sigmoid output channel, so a multi-class task refuses them
LossName = Literal["bce", "bce_logits", "smooth_l1", "dice", "ce", "wce", "dice_ce", "logdice_ce"]
BINARY_ONLY_LOSSES: tuple[LossName, ...] = ("bce", "bce_logits", "smooth_l1")
LrSchedule = Literal["none", "plateau"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda"]
Monitor = Literal["val_loss", "train_loss"]
Checkpoint = Literal["best", "last"]

# the share of cases kept out as the test set when data.test_fraction is left unset (study B's 20%)
DEFAULT_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DataConfig:
    root: str = ""  # "" = the embedded synthetic dataset
    synthetic_images: int = 600  # size of the synthetic default (ignored when root is set)
    task: Task = "binary"  # binary: labels binarised at 0.5; multiclass: integer labels kept
    num_classes: int = 3  # pixel classes when task == multiclass (background included)
    input_size: int = 64
    channels: int = 1  # 1 = greyscale, 3 = RGB
    normalize: Normalize = "fixed"  # fixed: x / 255; dataset: train-split per-channel mean/std
    split: SplitMode = "case"  # case: images of one case never on both sides
    # the internal test set, drawn first, by case and class, with its own seed, so it holds the
    # same images for every arm, seed and fold. None: DEFAULT_TEST_FRACTION, or 0 (no internal
    # test set) when test_root names an external one; 0: study A's protocol, no test set
    test_fraction: float | None = None
    test_seed: int = 0
    test_root: str = ""  # an external test set: a dataset folder scored like the internal one
    val_fraction: float = 0.2  # of what the test set leaves (the folds split the same rest)
    folds: int = 0  # 0 = one hold-out split; k >= 2 = k-fold, `fold` picks the validation fold
    fold: int = 0
    augment: Augment = "none"
    crop_size: int = 0  # crop_flip: training crop size (0 = input_size // 2)
    balance: bool = False  # study A: oversample minority classes with augmented copies
    balance_target: int = 0  # per-class count after balancing (0 = the majority count)
    min_foreground: float = 0.0  # study B uses 0.01: drop masks with less foreground
    blank_tissue_filter: bool = False  # study B's blank-tissue check
    cache_dir: str = ""  # "" = $TUNELAB_CACHE or ~/.cache/tunelab

    def __post_init__(self) -> None:
        _check_range(self, "val_fraction", 0.0, 1.0, low_open=True, high_open=True)
        if self.test_fraction is not None:
            _check_range(self, "test_fraction", 0.0, 1.0, high_open=True)
        if self.test_root and self.test_fraction:
            _fail(
                "data.test_fraction",
                self.test_fraction,
                "0 or None with data.test_root: one test set per sweep (cases held out for an "
                "internal one would be neither trained on nor scored)",
            )
        _check_range(self, "min_foreground", 0.0, 1.0, high_open=True)
        _check_min(self, "input_size", 8)
        _check_min(self, "synthetic_images", 12)
        _check_min(self, "balance_target", 0)
        _check_min(self, "crop_size", 0)
        if self.channels not in (1, 3):
            _fail("data.channels", self.channels, "1 (greyscale) or 3 (RGB)")
        if self.task == "multiclass":
            _check_min(self, "num_classes", 2)
        if self.folds == 1 or self.folds < 0:
            _fail("data.folds", self.folds, "0 (hold-out split) or k >= 2 (k-fold)")
        if self.folds >= 2 and not 0 <= self.fold < self.folds:
            _fail("data.fold", self.fold, f"0 .. {self.folds - 1} (data.folds = {self.folds})")
        if self.crop_size > self.input_size:
            _fail("data.crop_size", self.crop_size, f"<= data.input_size ({self.input_size})")

    @property
    def internal_test_fraction(self) -> float:
        """The share of cases in the internal test set, with test_fraction's default resolved."""
        if self.test_root:
            return 0.0
        return DEFAULT_TEST_FRACTION if self.test_fraction is None else self.test_fraction


@dataclass(frozen=True)
class ModelConfig:
    depth: int = 5  # levels, including the bottleneck; study A: 5 (64 .. 1024 channels)
    base_channels: int = 64  # channels of the first level, doubled at every level
    skip_mode: SkipMode = "concat"
    dropout: float = 0.0
    dropout_placement: DropoutPlacement = "decoder"  # study A: decoder; study B: all
    norm: Norm = "none"
    activation: Activation = "relu"

    def __post_init__(self) -> None:
        _check_range(self, "dropout", 0.0, 1.0, high_open=True)
        _check_min(self, "depth", 2)
        _check_min(self, "base_channels", 1)


@dataclass(frozen=True)
class TrainConfig:
    loss: LossName = "bce"
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 32
    max_epochs: int = 50
    lr_schedule: LrSchedule = "none"  # plateau: ReduceLROnPlateau on the EMA of the train loss
    plateau_factor: float = 0.2
    plateau_patience: int = 5
    plateau_ema: float = 0.9
    min_lr: float = 1e-6
    # auto: bf16 autocast on CUDA (fp16 where the GPU lacks bf16); bf16 autocast and
    # channels_last on CPUs with native bf16, measured to keep IoU (BENCHMARKS.md); fp32 elsewhere
    precision: Precision = "auto"
    channels_last: bool = False  # True: channels_last whatever the precision
    device: Device = "auto"
    # a trial saves its state (weights, optimizer, best weights) at most this often, and always
    # at its last epoch and where ASHA may prune it; 0: every epoch. The full U-Net's 497 MB
    # save took 2.3 s on the CPU VM: 7.6 H100 epochs when saved every epoch, 3.9% of a trial's
    # time every 60 s (BENCHMARKS.md, "Scale: checkpoint cost")
    checkpoint_every_s: float = 60.0

    def __post_init__(self) -> None:
        _check_min(self, "checkpoint_every_s", 0.0)
        _check_range(self, "lr", 0.0, 10.0, low_open=True)
        _check_min(self, "weight_decay", 0.0)
        _check_min(self, "batch_size", 1)
        _check_min(self, "max_epochs", 1)
        _check_range(self, "plateau_factor", 0.0, 1.0, low_open=True, high_open=True)
        _check_min(self, "plateau_patience", 0)
        _check_range(self, "plateau_ema", 0.0, 1.0, high_open=True)
        _check_min(self, "min_lr", 0.0)


@dataclass(frozen=True)
class StopConfig:
    """The convergence rule of study A (`../shared/reference/early_stopping.md`)."""

    enabled: bool = True
    monitor: Monitor = "val_loss"
    window: int = 10
    patience: int = 5
    min_epochs: int = 10
    threshold: float = 0.01  # trend index above -threshold counts as "no longer falling"

    def __post_init__(self) -> None:
        _check_min(self, "window", 3)
        _check_min(self, "patience", 0)
        _check_min(self, "min_epochs", 0)
        _check_min(self, "threshold", 0.0)


@dataclass(frozen=True)
class EvalConfig:
    thresholds: tuple[float, ...] = (0.5,)  # every one scored on the same predictions
    otsu: bool = True  # also score each image at its own Otsu threshold
    # the model the test set scores: best = the epoch with the lowest validation loss (study B)
    checkpoint: Checkpoint = "best"
    boundary_tolerance: float = 2.0  # pixels: normalized surface Dice counts boundary within it
    # validation and test images predicted in overlapping tiles of this size (MONAI's sliding
    # window, Gaussian-weighted), for images too large for memory; 0 = whole images
    tile_size: int = 0
    tile_overlap: float = 0.25
    # validation images above this size (MB, float32) stay in host memory with their masks,
    # pinned on a GPU machine, and go to the device a batch at a time, as test images always
    # do; a validation or test set above it is also scored a batch at a time (losses as sums)
    device_set_mb: float = 1024.0

    def __post_init__(self) -> None:
        _check_min(self, "device_set_mb", 0.0)
        _check_min(self, "boundary_tolerance", 0.0)
        _check_min(self, "tile_size", 0)
        _check_range(self, "tile_overlap", 0.0, 1.0, high_open=True)
        if not self.thresholds:
            _fail("eval.thresholds", self.thresholds, "at least one threshold in (0, 1)")
        for t in self.thresholds:
            if not 0.0 < t < 1.0:
                _fail("eval.thresholds", t, "thresholds strictly between 0 and 1")


@dataclass(frozen=True)
class TrialConfig:
    seed: int = 0  # fixes the split, the initial weights and the batch order
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    stop: StopConfig = field(default_factory=StopConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        size, depth = self.data.input_size, self.model.depth
        if size < 2**depth:  # a size that is not a multiple is reflect-padded (tunelab.model)
            raise ValueError(
                f"data.input_size = {size} is smaller than 2**model.depth = {2**depth}: "
                f"use a larger input or a smaller model.depth"
            )
        for key, tile in (
            ("data.crop_size", self.data.crop_size),
            ("eval.tile_size", self.eval.tile_size),
        ):
            if tile and tile < 2**depth:
                raise ValueError(f"{key} = {tile} is smaller than 2**model.depth = {2**depth}")
        if self.data.task == "multiclass" and self.train.loss in BINARY_ONLY_LOSSES:
            multiclass = ", ".join(
                repr(n) for n in get_args(LossName) if n not in BINARY_ONLY_LOSSES
            )
            raise ValueError(
                f"train.loss = {self.train.loss!r} is binary-only but data.task = 'multiclass': "
                f"use one of {multiclass}"
            )

    @property
    def out_channels(self) -> int:
        return 1 if self.data.task == "binary" else self.data.num_classes

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrialConfig:
        """Build from a flat (`{"model.dropout": 0.2}`) or nested dict, or a mix of both.

        Every problem is collected first and reported together, one line each, so a user fixes a
        search space in one go. Unknown keys get the closest valid key as a suggestion.
        """
        flat = flatten(values)
        problems: list[str] = []
        sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
        top: dict[str, Any] = {}
        for key, value in flat.items():
            section, _, name = key.rpartition(".")
            hints = _SECTIONS.get(section) if section else _TOP_FIELDS
            if hints is None or name not in hints:
                problems.append(_unknown_key(key))
                continue
            try:
                coerced = coerce(key, value, hints[name])
            except ValueError as error:
                problems.append(str(error))
                continue
            (sections[section] if section else top)[name] = coerced
        parts: dict[str, Any] = dict(top)
        for section, kwargs in sections.items():
            try:
                parts[section] = _SECTION_TYPES[section](**kwargs)
            except ValueError as error:
                problems.append(str(error))
        if problems:
            raise ValueError("invalid trial config:\n  " + "\n  ".join(problems))
        try:
            return cls(**parts)
        except ValueError as error:
            raise ValueError(f"invalid trial config:\n  {error}") from None

    def to_flat(self) -> dict[str, Any]:
        """Dotted names to plain values: the form of Ray param spaces and MLflow params."""
        return flatten(dataclasses.asdict(self))

    def replace(self, **flat_overrides: Any) -> TrialConfig:
        """A copy with some dotted keys changed, validated like `from_dict`."""
        return TrialConfig.from_dict({**self.to_flat(), **flat_overrides})


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ValueError(f"{key} = {value!r} is invalid: expected {allowed}")


def _section_of(obj: object) -> str:
    return _SECTION_NAMES[type(obj)]


def _check_min(obj: object, name: str, low: float) -> None:
    value = getattr(obj, name)
    if value < low:
        _fail(f"{_section_of(obj)}.{name}", value, f">= {low}")


def _check_range(
    obj: object,
    name: str,
    low: float,
    high: float,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    value = getattr(obj, name)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        _fail(f"{_section_of(obj)}.{name}", value, f"a value in {interval}")


def _unknown_key(key: str) -> str:
    name = key.rpartition(".")[2]  # a right field name under the wrong section: "train.dropout"
    close = [k for k in VALID_KEYS if k.rpartition(".")[2] == name][:1]
    close = close or difflib.get_close_matches(key, VALID_KEYS, n=1, cutoff=0.5)
    suggestion = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r}{suggestion} (valid keys: TrialConfig().to_flat())"


def _hints(cls: type) -> dict[str, Any]:
    module_globals = vars(typing) | vars(types) | globals()
    hints = get_type_hints(cls, globalns=module_globals)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


_SECTION_TYPES: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "stop": StopConfig,
    "eval": EvalConfig,
}
_SECTION_NAMES = {cls: name for name, cls in _SECTION_TYPES.items()}
_SECTIONS = {name: _hints(cls) for name, cls in _SECTION_TYPES.items()}
_TOP_FIELDS = {k: v for k, v in _hints(TrialConfig).items() if k not in _SECTION_TYPES}
VALID_KEYS: list[str] = list(_TOP_FIELDS) + [
    f"{section}.{name}" for section, hints in _SECTIONS.items() for name in hints
]
