"""The training loop on a tiny synthetic dataset: results, statuses, determinism, resume."""

import copy
import math
import re

import pytest
import torch
from monai.losses import DiceCELoss

from tunelab import metrics
from tunelab.config import TrialConfig
from tunelab.data import prepare
from tunelab.device import resolve_device, resolve_dtype
from tunelab.early_stop import trend_index
from tunelab.inference import logit_batches
from tunelab.metric_names import IMAGE_METRICS
from tunelab.model import UNet
from tunelab.train import Trainer, fit, main


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def tiny(cache, tiny_trial):
    def make(**overrides) -> TrialConfig:
        return TrialConfig.from_dict({"data.cache_dir": cache, **tiny_trial, **overrides})

    return make


def test_fit_yields_one_result_per_epoch_with_metrics(tiny):
    results = list(fit(tiny()))
    assert [r.epoch for r in results] == [1, 2]
    assert [r.status for r in results] == ["running", "completed"]
    last = results[-1]
    assert math.isfinite(last.train_loss) and math.isfinite(last.val_loss)
    assert 0 <= last.metrics["iou"] <= 1 and "iou_otsu" in last.metrics
    assert "iou/Adenocarcinoma" in last.metrics
    flat = last.to_flat()
    assert flat["val_iou"] == last.metrics["iou"] and flat["status"] == "completed"
    assert flat["lr"] == 1e-3 and flat["epoch_seconds"] > 0
    # the time before the first step (data load, model build) is reported once, with epoch 1
    assert results[0].to_flat()["startup_seconds"] > 0 and "startup_seconds" not in flat


def test_same_config_same_numbers(tiny):
    first = [r.val_loss for r in fit(tiny())]
    second = [r.val_loss for r in fit(tiny())]
    assert first == second
    other_seed = [r.val_loss for r in fit(tiny(seed=1))]
    assert other_seed != first


def test_nan_loss_ends_as_diverged(tiny):
    trainer = Trainer(tiny(**{"train.max_epochs": 5}))
    trainer.loss_fn = lambda logits, target, weights: logits.mean() * math.nan
    results = list(trainer.epochs())
    assert len(results) == 1
    assert results[0].status == "diverged" and results[0].metrics == {}


def test_convergence_ends_the_run(tiny):
    cfg = tiny(
        **{
            "train.max_epochs": 10,
            "stop.window": 3,
            "stop.patience": 0,
            "stop.min_epochs": 0,
            "stop.threshold": 100.0,  # any trend counts as "no longer falling"
        },
    )
    results = list(fit(cfg))
    # the first trend exists at epoch 3 (window 3), and one epoch above -threshold is enough
    assert [r.status for r in results][-1] == "converged" and len(results) == 3
    assert results[0].trend is None and results[-1].trend is not None
    # in Ray the stopper decides: the loop reports convergence but goes on
    free = list(Trainer(cfg, stop_on_convergence=False).epochs())
    assert len(free) == 10 and free[2].status == "converged"


def test_disabled_rule_still_reports_the_trend(tiny):
    cfg = tiny(**{"train.max_epochs": 4, "stop.enabled": False, "stop.window": 3})
    results = list(fit(cfg))
    assert len(results) == 4 and results[-1].status == "completed"
    assert results[-1].trend is not None


def test_resume_from_state_continues_exactly(tiny):
    cfg = tiny(**{"train.max_epochs": 3, "model.dropout": 0.3})
    data = prepare(cfg)
    straight = [r.val_loss for r in Trainer(cfg, data).epochs()]
    first = Trainer(cfg, data)
    epochs = first.epochs()
    next(epochs), next(epochs)
    state = first.state_dict()
    resumed = Trainer(cfg, data)
    resumed.load_state_dict(state)
    rest = [r.val_loss for r in resumed.epochs()]
    assert rest == straight[2:]


def test_wce_uses_training_class_frequencies(tiny):
    trainer = Trainer(tiny(**{"train.loss": "wce"}))
    # w_c = (1/r_c) / sum(1/r_i); with two classes w_0 = r_1 / (r_0 + r_1) = r_1, and w_1 = r_0:
    # the weights are the training split's pixel shares, swapped
    masks = trainer.data.train.source.masks  # (N, H, W) of the training split only
    foreground = float((masks == 1).mean())
    assert trainer.class_weights.tolist() == pytest.approx([foreground, 1 - foreground], rel=1e-5)
    # the validation split's shares are not what the weights come from
    val_foreground = float((trainer.data.val_masks == 1).float().mean())
    assert abs(val_foreground - foreground) > 1e-3


def test_multiclass_trains(tiny):
    cfg = tiny(**{"data.task": "multiclass", "train.loss": "dice_ce", "data.channels": 3})
    trainer = Trainer(cfg)
    results = list(trainer.epochs())
    assert [r.status for r in results] == ["running", "completed"]
    assert "dice_c2" in results[-1].metrics
    assert results[1].train_loss < results[0].train_loss  # it learns
    # a logit map per class (blank, tissue, glands), and the validation loss is MONAI's Dice + CE
    # of them over the three classes (its smoothing set to tunelab's DICE_EPS = 1)
    with torch.no_grad():
        logits = trainer.model.eval()(trainer.val_images)
    assert logits.shape[1] == 3
    monai = DiceCELoss(softmax=True, to_onehot_y=True, smooth_nr=1.0, smooth_dr=1.0)
    expected = monai(logits, trainer.val_masks[:, None]).item()
    assert results[-1].val_loss == pytest.approx(expected, rel=1e-5)


def test_plateau_schedule_lowers_lr(tiny):
    cfg = tiny(
        **{
            "train.lr_schedule": "plateau",
            "train.plateau_patience": 0,
            "train.lr": 10.0,  # the loss cannot improve much at this rate, so the plateau acts
            "train.max_epochs": 4,
            "stop.enabled": False,
        },
    )
    lrs = [r.lr for r in fit(cfg)]
    assert lrs[0] == 10.0 and min(lrs) < 10.0


def test_cli_prints_a_line_per_epoch(cache, capsys):
    code = main(
        [
            "--set",
            f"data.cache_dir={cache!r}",
            "--set",
            "data.synthetic_images=40",
            "--set",
            "data.input_size=32",
            "--set",
            "model.depth=3",
            "--set",
            "model.base_channels=4",
            "--set",
            "train.max_epochs=2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("epoch ") >= 2 and "completed" in out and "Adenocarcinoma" in out
    assert re.search(r"^test set \(7 images, model of epoch [12]\):  iou 0\.\d{4}", out, re.M)


def test_cli_rejects_bad_override(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--set", "model.dropot=0.1"])
    assert info.value.code == 2
    assert "did you mean 'model.dropout'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, torch.bfloat16), (False, True, torch.bfloat16), (False, False, None)],
)
def test_auto_precision_on_cpu_uses_bf16_only_where_it_is_native(
    monkeypatch, avx512_bf16, amx, expected
):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    cfg = TrialConfig.from_dict({"train.precision": "auto"})
    assert resolve_dtype(cfg, torch.device("cpu")) == expected
    fp32 = TrialConfig.from_dict({"train.precision": "fp32"})
    assert resolve_dtype(fp32, torch.device("cpu")) is None


def epoch_values(out: str, name: str) -> list[float]:
    return [float(value) for value in re.findall(rf"{name} (\d+\.\d+)", out)]


def test_cli_data_trains_on_the_given_folder(make_png_dataset, cache, capsys):
    root = make_png_dataset(classes={"Alpha": 4, "Beta": 4}, size=32)
    sizes = ["--set", "data.input_size=32", "--set", "model.depth=3"]
    small = ["--set", "model.base_channels=4", "--set", "train.max_epochs=1"]
    assert main(["--data", str(root), "--set", f"data.cache_dir={cache!r}", *sizes, *small]) == 0
    out = capsys.readouterr().out
    assert str(root) in out and "Alpha" in out and "Beta" in out  # its own classes
    assert "Adenocarcinoma" not in out  # not the synthetic default's


def test_cli_seed_changes_split_weights_and_order(cache, capsys):
    common = ["--set", f"data.cache_dir={cache!r}", "--set", "data.synthetic_images=40"]
    common += ["--set", "data.input_size=32", "--set", "model.depth=3"]
    common += ["--set", "model.base_channels=4", "--set", "train.max_epochs=2"]
    runs = {}
    for seed in ("0", "1", "0"):
        assert main([*common, "--seed", seed]) == 0
        runs.setdefault(seed, []).append(epoch_values(capsys.readouterr().out, "val_loss"))
    assert runs["0"][0] == runs["0"][1] and len(runs["0"][0]) == 2  # a seed repeats exactly
    assert runs["1"][0] != runs["0"][0]


@pytest.mark.parametrize(
    ("device", "cuda_available", "expected"),
    [("auto", False, "cpu"), ("auto", True, "cuda"), ("cpu", True, "cpu"), ("cuda", True, "cuda")],
)
def test_resolve_device(monkeypatch, device, cuda_available, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_available)
    cfg = TrialConfig.from_dict({"train.device": device})
    assert resolve_device(cfg) == torch.device(expected)


def test_cuda_without_a_device_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"train\.device = 'cuda' but no CUDA device is visible"):
        resolve_device(TrialConfig.from_dict({"train.device": "cuda"}))


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_lays_out_weights_and_inputs(tiny, channels_last):
    # RGB: with one channel both layouts have the same strides
    trainer = Trainer(tiny(**{"train.channels_last": channels_last, "data.channels": 3}))
    convs = [p for p in trainer.model.parameters() if p.dim() == 4 and p.shape[-1] > 1]
    layout = torch.channels_last if channels_last else torch.contiguous_format
    assert convs and all(p.is_contiguous(memory_format=layout) for p in convs)
    assert trainer.val_images.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert next(trainer.epochs()).status == "running"  # and it trains


def test_stop_monitor_train_loss_feeds_the_rule_the_training_losses(tiny):
    window = {"stop.window": 3, "stop.enabled": False, "train.max_epochs": 4}
    on_train = list(fit(tiny(**window, **{"stop.monitor": "train_loss"})))
    on_val = list(fit(tiny(**window)))
    for results, loss in ((on_train, "train_loss"), (on_val, "val_loss")):
        losses = [getattr(r, loss) for r in results]
        # the trend index of epochs 2-4 is that of the last 3 losses of the monitored kind
        assert results[-1].trend == pytest.approx(trend_index(losses[-3:]), rel=1e-9)
    assert on_train[-1].trend != pytest.approx(on_val[-1].trend)


def script_val_losses(trainer: Trainer, losses: list[float]) -> None:
    """Make the trainer's validation loss follow `losses`, epoch by epoch (metrics stay real):
    a trial whose validation loss rises after a known epoch."""
    real, script = trainer._validate, iter(losses)

    def validate():
        _, scores = real()
        return next(script), scores

    trainer._validate = validate


def scores_of(cfg: TrialConfig, data, weights) -> dict[str, float]:
    """The test set's scores of given weights, computed here outside the loop."""
    model = UNet(cfg.model, cfg.data.channels, cfg.out_channels)
    model.load_state_dict(weights)
    with torch.no_grad():
        logits = model.eval()(data.test.images)
    test = data.test
    return metrics.score(logits, test.masks, test.classes, test.class_names, (0.5,), True)


# lowest validation loss at epoch 3, rising after it
RISING_AFTER_3 = [1.0, 0.6, 0.4, 0.7, 0.9]


@pytest.mark.parametrize("device_set_mb", [1024.0, 0.0])  # whole, or streamed by batch
@pytest.mark.parametrize("checkpoint, tested_epoch", [("best", 3), ("last", 5)])
def test_the_test_set_is_scored_once_at_the_end_with_the_chosen_epoch(
    tiny, checkpoint, tested_epoch, device_set_mb
):
    overrides = {"eval.checkpoint": checkpoint, "eval.device_set_mb": device_set_mb}
    cfg = tiny(**{"train.max_epochs": 5, "stop.enabled": False, **overrides})
    trainer = Trainer(cfg)
    script_val_losses(trainer, RISING_AFTER_3)
    snapshots, results = {}, []
    for result in trainer.epochs():
        snapshots[result.epoch] = copy.deepcopy(trainer.model.state_dict())
        results.append(result)
    assert [r.test is None for r in results] == [True, True, True, True, False]
    test = results[-1].test
    assert test.checkpoint_epoch == tested_epoch
    expected = scores_of(cfg, trainer.data, snapshots[tested_epoch])
    assert {k: v for k, v in test.metrics.items() if k in expected} == pytest.approx(expected)
    assert 0 <= test.metrics["nsd"] <= 1 and test.metrics["hd95"] >= 0
    # testing leaves the last weights in place (the checkpoint resumes from them)
    now = trainer.model.state_dict()
    assert all(torch.equal(now[k], snapshots[5][k]) for k in now)
    flat = results[-1].to_flat()
    assert flat["checkpoint_epoch"] == tested_epoch and flat["test_iou"] == test.metrics["iou"]
    assert "test_iou" not in results[-2].to_flat()
    rows = test.images
    assert rows["image"] == list(trainer.data.test.files) and len(rows["iou"]) == len(rows["image"])
    assert set(rows) == {"image", "case", "class", *IMAGE_METRICS}
    assert sum(rows["iou"]) / len(rows["iou"]) == pytest.approx(test.metrics["iou"])


def test_a_resumed_trial_keeps_its_best_weights(tiny, tmp_path):
    cfg = tiny(**{"train.max_epochs": 5, "stop.enabled": False})
    data = prepare(cfg)
    straight = Trainer(cfg, data)
    script_val_losses(straight, RISING_AFTER_3)
    expected = list(straight.epochs())[-1].test
    first = Trainer(cfg, data)
    script_val_losses(first, RISING_AFTER_3)
    epochs = first.epochs()
    for _ in range(4):  # killed after epoch 4, one epoch past its best
        next(epochs)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    resumed = Trainer(cfg, data)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    script_val_losses(resumed, RISING_AFTER_3[4:])
    test = list(resumed.epochs())[-1].test
    assert test.checkpoint_epoch == 3
    assert test.metrics == expected.metrics


def test_without_a_test_set_nothing_is_tested_or_kept(tiny):
    trainer = Trainer(tiny(**{"data.test_fraction": 0}))
    results = list(trainer.epochs())
    assert len(trainer.data.test) == 0 and all(r.test is None for r in results)
    assert trainer.best_weights is None and "checkpoint_epoch" not in results[-1].to_flat()


def test_a_size_that_is_not_a_multiple_of_2_to_the_depth_trains_and_tests(tiny):
    # study B's shape at small scale: random crops for training, whole images for testing
    cfg = tiny(**{"data.input_size": 36, "data.augment": "crop_flip", "data.crop_size": 20})
    last = list(fit(cfg))[-1]
    assert last.status == "completed" and 0 <= last.test.metrics["iou"] <= 1
    assert Trainer(cfg).data.test.images.shape[-2:] == (36, 36)


@pytest.mark.parametrize("streamed", [False, True])
def test_tiles_blend_back_to_the_whole_image_prediction(tiny, streamed):
    # a pointwise model predicts each pixel alone, so any tiling must give the same map
    trainer = Trainer(tiny(**{"eval.tile_size": 16, "eval.tile_overlap": 0.5}))
    trainer.model = torch.nn.Conv2d(1, 1, 1)
    test = trainer.data.test  # 32 x 32: 9 overlapping 16 x 16 tiles each
    with torch.no_grad():
        whole = trainer.model(test.images)
    tiled = list(trainer._predictions(test.images, test.masks, streamed))
    assert len(tiled) == (-(-len(test) // 16) if streamed else 1)  # 2 x batch size 8
    torch.testing.assert_close(torch.cat([logits for logits, _ in tiled]), whole)
    assert torch.equal(torch.cat([masks for _, masks in tiled]), test.masks)


@pytest.mark.parametrize("loss", ["wce", "logdice_ce", "dice"])
def test_validation_and_test_scored_a_batch_at_a_time_equal_the_whole_set_at_once(tiny, loss):
    # streamed (any set is over 0 MB), 2 x batch_size 3 = 6 images per prediction batch:
    # several batches and a short last one; wce and logdice_ce are ratios of sums over the set,
    # not means of batch means
    overrides = {"train.batch_size": 3, "data.split": "image", "eval.device_set_mb": 0.0}
    cfg = tiny(**{"train.loss": loss, **overrides})
    trainer = Trainer(cfg)
    data = trainer.data
    assert len(data.val_images) % 6 and len(data.val_images) > 6 and len(data.test) > 6
    assert trainer.val_streamed
    result = next(trainer.epochs())
    tested = trainer.score_test()  # the best epoch is this one: the weights now in the model
    # the same batches' logits, scored here as one set (a conv's last bits may depend on the
    # batch, so the reference takes the same batches)
    cpu = torch.device("cpu")
    val_logits, test_logits = (
        torch.cat(list(logit_batches(trainer.model, images, device=cpu, batch_size=6)))
        for images in (data.val_images, data.test.images)
    )
    whole = trainer.loss_fn(val_logits, data.val_masks, trainer.class_weights).item()
    assert result.val_loss == pytest.approx(whole, rel=1e-5)
    thresholds = cfg.eval.thresholds
    expected = metrics.score(
        val_logits, data.val_masks, data.val_classes, data.class_names, thresholds, otsu=True
    )
    assert result.metrics.keys() == expected.keys()
    assert result.metrics == pytest.approx(expected, rel=1e-6)
    columns = metrics.image_scores(
        test_logits, data.test.masks, thresholds, True, cfg.eval.boundary_tolerance
    )
    expected = metrics.summarise(*columns, data.test.classes, data.test.class_names)
    assert tested.metrics.keys() == expected.keys() and "hd95" in expected
    assert tested.metrics == pytest.approx(expected, rel=1e-6)


def test_a_validation_set_over_the_device_limit_streams_to_the_same_scores(tiny):
    held = Trainer(tiny())
    streamed = Trainer(tiny(**{"eval.device_set_mb": 0.0}))  # any set is over 0 MB
    assert not held.val_streamed and held.val_images.device == held.device
    assert held.val_masks.device == held.device
    # in host memory (pinned where a GPU is the device), not copied to the device
    assert streamed.val_streamed and streamed.val_images.device.type == "cpu"
    assert streamed.val_masks.device.type == "cpu"
    for a, b in zip(held.epochs(), streamed.epochs(), strict=True):
        # float64 sums of float32 batch sums: equal to the last digits of float32
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-6) and a.metrics == b.metrics
    assert a.test.metrics == b.test.metrics  # the test set streams above the limit too
