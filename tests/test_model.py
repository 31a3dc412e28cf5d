import numpy as np
import pytest
import torch

from tunelab.config import ModelConfig
from tunelab.model import UNet


def count(module: torch.nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize("skip_mode", ["concat", "none", "avgpool"])
@pytest.mark.parametrize("depth", [2, 3, 4])
def test_output_is_logits_of_input_size(skip_mode, depth):
    model = UNet(ModelConfig(depth=depth, base_channels=4, skip_mode=skip_mode), 3, 2)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 2, 32, 32)
    # raw logits: the last layer is the 1x1 conv, no sigmoid or softmax anywhere
    assert isinstance(list(model.modules())[-1], torch.nn.Conv2d)
    assert count(model, torch.nn.Sigmoid) == count(model, torch.nn.Softmax) == 0


def test_study_a_model_matches_original_unet_size():
    # Ronneberger et al.'s U-Net (5 levels, 64 .. 1024 channels) has about 31 M parameters
    params = sum(p.numel() for p in UNet(ModelConfig(), 1, 1).parameters())
    assert 30e6 < params < 32e6


def test_widths_double_per_level():
    model = UNet(ModelConfig(depth=4, base_channels=8), 1, 1)
    widths = [block[0].out_channels for block in model.encoder]
    assert widths == [8, 16, 32, 64]


def test_skip_none_has_narrower_decoder_inputs():
    concat = UNet(ModelConfig(depth=3, base_channels=4), 1, 1)
    removed = UNet(ModelConfig(depth=3, base_channels=4, skip_mode="none"), 1, 1)
    assert [b[0].in_channels for b in concat.decoder] == [16, 8]
    assert [b[0].in_channels for b in removed.decoder] == [8, 4]


def test_avgpool_skip_smooths_with_5x5_stride_1():
    model = UNet(ModelConfig(depth=3, base_channels=4, skip_mode="avgpool"), 1, 1)
    pools = [m for m in model.skips if isinstance(m, torch.nn.AvgPool2d)]
    assert len(pools) == 2 and all((p.kernel_size, p.stride) == (5, 1) for p in pools)
    x = torch.randn(1, 4, 16, 16)
    assert pools[0](x).shape == x.shape


def test_dropout_placement():
    decoder = UNet(ModelConfig(depth=3, base_channels=4, dropout=0.5), 1, 1)
    everywhere = UNet(
        ModelConfig(depth=3, base_channels=4, dropout=0.5, dropout_placement="all"), 1, 1
    )
    # two convs per block; the 1x1 output conv never gets dropout
    assert count(decoder, torch.nn.Dropout) == 2 * 2
    assert count(everywhere, torch.nn.Dropout) == 2 * (3 + 2)
    assert count(UNet(ModelConfig(depth=3, base_channels=4), 1, 1), torch.nn.Dropout) == 0


def test_norm_and_activation():
    model = UNet(ModelConfig(depth=3, base_channels=4, norm="batch", activation="leaky_relu"), 1, 1)
    assert count(model, torch.nn.BatchNorm2d) == 2 * (3 + 2)
    assert count(model, torch.nn.LeakyReLU) == 2 * (3 + 2)
    assert count(model, torch.nn.ReLU) == 0
    # a conv followed by batch norm needs no bias
    assert model.encoder[0][0].bias is None


def test_same_seed_same_weights():
    def weights(seed):
        torch.manual_seed(seed)
        return torch.cat(
            [p.flatten() for p in UNet(ModelConfig(depth=3, base_channels=4), 1, 1).parameters()]
        )

    assert torch.equal(weights(1), weights(1))
    assert not torch.equal(weights(1), weights(2))


def test_a_size_that_is_not_a_multiple_is_reflect_padded_and_cropped_back():
    cfg = ModelConfig(depth=3, base_channels=4)  # the model needs multiples of 2**3 = 8
    model = UNet(cfg, 1, 2).eval()
    x = torch.rand(2, 1, 21, 30)
    # by hand: numpy's reflect padding to 24 x 32 (1 + 2 rows, 1 + 1 columns), then the crop
    padded = np.pad(x.numpy(), ((0, 0), (0, 0), (1, 2), (1, 1)), mode="reflect")
    with torch.no_grad():
        expected = model(torch.from_numpy(padded))[..., 1:22, 1:31]
        out = model(x)
    assert out.shape == (2, 2, 21, 30)
    torch.testing.assert_close(out, expected)
