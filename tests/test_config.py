import re
from pathlib import Path

import pytest

from tunelab.config import VALID_KEYS, TrialConfig


def test_defaults_are_study_a_baseline():
    cfg = TrialConfig()
    assert (cfg.data.input_size, cfg.data.channels, cfg.data.task) == (64, 1, "binary")
    assert (cfg.model.depth, cfg.model.base_channels, cfg.model.skip_mode) == (5, 64, "concat")
    assert (cfg.model.activation, cfg.model.dropout) == ("relu", 0.0)
    assert (cfg.train.loss, cfg.train.lr, cfg.train.batch_size) == ("bce", 1e-4, 32)
    assert cfg.eval.thresholds == (0.5,)
    assert cfg.out_channels == 1


def test_flat_round_trip_and_keys():
    cfg = TrialConfig.from_dict({"model.dropout": 0.2, "eval.thresholds": [0.3, 0.5]})
    flat = cfg.to_flat()
    assert flat["model.dropout"] == 0.2 and flat["eval.thresholds"] == (0.3, 0.5)
    assert TrialConfig.from_dict(flat) == cfg
    assert set(flat) == readme_keys()


def readme_keys() -> set[str]:
    """The dotted keys README's configuration table documents: `section` | `key` (default), ..."""
    keys = set()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section_text = readme.split("\n## Configuration\n")[1].split("\n## ")[0]
    for row in re.findall(r"^\| (`\w+`|top level) \| (.+) \|$", section_text, re.MULTILINE):
        section, cell = row[0].strip("`"), re.sub(r"\([^()]*(\([^()]*\))?[^()]*\)", "", row[1])
        names = re.findall(r"`(\w+)`", cell)  # the parentheses (defaults) are gone
        keys |= {name if section == "top level" else f"{section}.{name}" for name in names}
    return keys


def test_every_key_is_documented_and_every_documented_key_exists():
    documented = readme_keys()
    assert len(documented) > 40  # the table was found
    assert set(VALID_KEYS) == documented


def test_nested_and_flat_mix():
    cfg = TrialConfig.from_dict({"model": {"depth": 4}, "data.input_size": 128, "seed": 3})
    assert (cfg.model.depth, cfg.data.input_size, cfg.seed) == (4, 128, 3)


def test_int_accepted_for_float_and_integral_float_for_int():
    cfg = TrialConfig.from_dict({"train.lr": 1, "train.batch_size": 16.0})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.batch_size, int)


def test_unknown_key_suggests_closest():
    with pytest.raises(
        ValueError, match=r"unknown key 'model.dropot'; did you mean 'model.dropout'"
    ):
        TrialConfig.from_dict({"model.dropot": 0.1})


def test_right_name_wrong_section_suggests_the_section():
    with pytest.raises(ValueError, match=r"'train.dropout'; did you mean 'model.dropout'"):
        TrialConfig.from_dict({"train.dropout": 0.1})


def test_every_problem_reported_once():
    with pytest.raises(ValueError) as info:
        TrialConfig.from_dict({"model.dropout": 1.0, "train.loss": "bse", "data.chanels": 3})
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 3
    text = str(info.value)
    assert "model.dropout = 1.0" in text and "[0.0, 1.0)" in text
    assert "train.loss = 'bse'" in text and "did you mean 'bce'" in text and "'dice_ce'" in text
    assert "did you mean 'data.channels'" in text


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"data.input_size": 16},
            r"data.input_size = 16 is smaller than 2\*\*model.depth = 32",
        ),
        ({"model.depth": 6, "data.input_size": 32}, r"2\*\*model.depth = 64"),
        ({"eval.tile_size": 16}, r"eval.tile_size = 16 is smaller than 2\*\*model.depth = 32"),
        ({"eval.tile_overlap": 1.0}, r"eval.tile_overlap = 1.0 is invalid"),
        ({"model.dropout": -0.1}, r"model.dropout = -0.1"),
        ({"data.channels": 2}, r"data.channels = 2 .* 1 \(greyscale\) or 3 \(RGB\)"),
        ({"data.task": "multiclass"}, r"train.loss = 'bce' is binary-only"),
        ({"data.folds": 3, "data.fold": 3}, r"data.fold = 3 .* 0 .. 2"),
        ({"eval.thresholds": [0.5, 1.0]}, r"eval.thresholds = 1.0"),
        ({"eval.thresholds": []}, r"at least one threshold"),
        ({"train.batch_size": "32"}, r"train.batch_size = '32' is invalid: expected an integer"),
        ({"stop.enabled": 1}, r"stop.enabled = 1 is invalid: expected True or False"),
    ],
)
def test_invalid_values_are_rejected_with_key_and_fix(values, message):
    with pytest.raises(ValueError, match=message):
        TrialConfig.from_dict(values)


def test_multiclass_out_channels():
    cfg = TrialConfig.from_dict(
        {"data.task": "multiclass", "data.num_classes": 3, "train.loss": "dice_ce"}
    )
    assert cfg.out_channels == 3


def test_replace_validates():
    cfg = TrialConfig().replace(**{"model.depth": 4})
    assert cfg.model.depth == 4
    with pytest.raises(ValueError, match=r"model\.depth"):
        cfg.replace(**{"model.depth": 1})


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        TrialConfig().model.depth = 3  # type: ignore[misc]


def test_the_test_fraction_defaults_to_a_fifth_and_to_none_beside_an_external_test_set():
    assert TrialConfig().data.test_fraction is None
    assert TrialConfig().data.internal_test_fraction == 0.2  # study B's held-out 20%
    external = TrialConfig.from_dict({"data.test_root": "/slides/hospital_b"})
    assert external.data.internal_test_fraction == 0.0
    with pytest.raises(ValueError, match=r"data.test_fraction = 0.1 is invalid: expected 0 or"):
        TrialConfig.from_dict({"data.test_root": "/b", "data.test_fraction": 0.1})
    study_a = TrialConfig.from_dict({"data.test_fraction": 0})
    assert study_a.data.internal_test_fraction == 0.0
    assert TrialConfig.from_dict({"data.test_fraction": None}) == TrialConfig()
    assert (TrialConfig().eval.checkpoint, TrialConfig().eval.boundary_tolerance) == ("best", 2.0)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"data.test_fraction": 1.0}, "data.test_fraction = 1.0 is invalid: expected a value in"),
        ({"data.test_fraction": "all"}, "data.test_fraction = 'all' is invalid: expected a number"),
        ({"eval.checkpoint": "final"}, "eval.checkpoint = 'final' is invalid"),
        ({"eval.boundary_tolerance": -1}, "eval.boundary_tolerance = -1.0 is invalid"),
    ],
)
def test_bad_evaluation_settings_name_the_key(values, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        TrialConfig.from_dict(values)
