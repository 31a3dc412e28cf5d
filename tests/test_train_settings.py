"""Training settings checked by their effect on the loop: `train.precision` (bf16 on the CPU,
fp16 on CUDA only), `train.weight_decay` and `eval.otsu`."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from tunelab import metrics
from tunelab.config import TrialConfig
from tunelab.data import prepare
from tunelab.train import Trainer, fit

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_trial):
    cache = str(tmp_path_factory.mktemp("cache"))

    def make(**overrides) -> TrialConfig:
        # no test set: these tests look at training and validation only
        flat = {"data.cache_dir": cache, **tiny_trial, "data.test_fraction": 0, **overrides}
        return TrialConfig.from_dict(flat)

    return make


def first_epoch(cfg: TrialConfig, data=None) -> tuple[float, set[torch.dtype]]:
    """(training loss, dtypes of the model's outputs while it trained) of one epoch."""
    trainer = Trainer(cfg, data)
    dtypes: set[torch.dtype] = set()
    trainer.model.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
    result = next(trainer.epochs())
    return result.train_loss, dtypes


@pytest.mark.parametrize(
    ("precision", "device", "dtype"),
    [
        ("bf16", "cpu", torch.bfloat16),
        pytest.param("bf16", "cuda", torch.bfloat16, marks=CUDA),
        pytest.param("fp16", "cuda", torch.float16, marks=CUDA),
    ],
)
def test_reduced_precision_trains_in_that_dtype_close_to_fp32(tiny, precision, device, dtype):
    data = prepare(tiny())
    reference, reference_dtypes = first_epoch(tiny(**{"train.device": device}), data)
    loss, dtypes = first_epoch(tiny(**{"train.precision": precision, "train.device": device}), data)
    assert reference_dtypes == {torch.float32} and dtypes == {dtype}  # autocast was on
    # same initial weights, same batches: only the arithmetic differs
    assert math.isfinite(loss) and loss != reference
    assert loss == pytest.approx(reference, rel=0.02)


def test_fp16_on_the_cpu_is_refused_with_the_setting_to_use_instead(tiny):
    with pytest.raises(ValueError, match=r"train\.precision = 'fp16' needs a CUDA device; use "):
        Trainer(tiny(**{"train.precision": "fp16", "train.device": "cpu"}))


def adam_first_step(p: torch.Tensor, grad: torch.Tensor, lr: float, decay: float) -> torch.Tensor:
    """Adam's first update (Kingma & Ba) with L2 weight decay added to the gradient, as
    torch.optim.Adam's weight_decay is: m = (1 - b1) g, v = (1 - b2) g^2, and the bias
    corrections leave p - lr * g / (|g| + eps)."""
    g = grad + decay * p
    return p - lr * g / (g.abs() + 1e-8)


@pytest.mark.parametrize("decay", [0.0, 10.0])
def test_weight_decay_enters_adam_s_step(tiny, decay):
    # a batch larger than the training split: one epoch is one optimiser step
    cfg = tiny(**{"train.weight_decay": decay, "train.batch_size": 64})
    trainer = Trainer(cfg)
    (batch,) = list(trainer.data.train.epoch(1))  # the batch epoch 1 trains on
    start = copy.deepcopy(trainer.model)
    loss = trainer.loss_fn(start(batch[0]), batch[1], None)
    grads = torch.autograd.grad(loss, list(start.parameters()))
    next(trainer.epochs())
    moved = 0.0
    for p0, grad, p1 in zip(start.parameters(), grads, trainer.model.parameters(), strict=True):
        expected = adam_first_step(p0.detach(), grad, cfg.train.lr, decay)
        torch.testing.assert_close(p1.detach(), expected, rtol=0, atol=1e-7)
        other = adam_first_step(p0.detach(), grad, cfg.train.lr, 10.0 - decay)
        moved += float((other - expected).abs().max())
    assert moved > 1e-3  # the decays give other steps: the check tells them apart


def test_otsu_off_computes_and_reports_no_otsu_score(tiny, monkeypatch):
    cfg = tiny(**{"eval.otsu": False, "data.test_fraction": 0.2, "train.max_epochs": 1})

    def no_otsu(probs):
        raise AssertionError("an Otsu threshold was computed with eval.otsu = False")

    monkeypatch.setattr(metrics, "otsu_threshold", no_otsu)
    last = list(fit(cfg))[-1]
    assert last.test is not None  # the test set was scored too
    for scores in (last.metrics, last.test.metrics):
        assert "iou" in scores and not [name for name in scores if "otsu" in name]
    assert not [name for name in last.to_flat() if "otsu" in name]
