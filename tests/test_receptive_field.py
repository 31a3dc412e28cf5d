"""Receptive fields: the analytic size against hand-worked networks, and the gradient field of
a network with positive weights, which reaches exactly the analytic size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tunelab import receptive_field as rf
from tunelab.config import ModelConfig
from tunelab.model import UNet


def test_the_analytic_field_of_hand_worked_u_nets():
    # depth 2: conv conv (1 + 2 + 2 = 5), pool (+1 = 6, jump 2), conv conv at jump 2 (+8 = 14),
    # up-conv (jump 1), conv conv (+4 = 18)
    assert rf.theoretical(ModelConfig(depth=2)) == 18
    # depth 3: 1 + 4 + 1 + 8 + 2 + 16 (bottom) + 8 + 4 = 44
    assert rf.theoretical(ModelConfig(depth=3)) == 44
    # from 4 levels on, where a pixel sits in the pooling grid matters: [a, b] -> [a // 2, b // 2]
    # at an up-sampling keeps 1 or 2 coarse pixels per 2 fine ones (checked against gradients
    # below); study B's U-Nets (4 and 5 levels) see up to 100 and 204 pixels
    assert rf.theoretical(ModelConfig(depth=4)) == 100
    assert rf.theoretical(ModelConfig(depth=5)) == 204
    # the skips see less than the deepest path, whatever they do
    for skip in ("none", "avgpool"):
        assert rf.theoretical(ModelConfig(depth=4, skip_mode=skip)) == 100


@pytest.mark.parametrize("depth", [2, 3, 4, 5])
def test_a_positive_network_s_gradient_field_is_exactly_the_analytic_one(depth):
    # all weights and biases positive, a positive input: every unit is active and no two paths
    # cancel, so every pixel of the field has a non-zero gradient. Average pooling in place of
    # max pooling (the same 2x2 window and stride, so the same field): a max sends its gradient
    # to one pixel of the window only.
    cfg = ModelConfig(depth=depth, base_channels=2, norm="none")
    model = UNet(cfg, 1, 1).double()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.uniform_(0.05, 0.1)
    model.pool = nn.AvgPool2d(2)
    side = rf.probe_size(cfg)
    x = torch.rand(1, 1, side, side, dtype=torch.float64) + 0.5
    sizes = []
    for offset in range(2 ** (depth - 1)):  # every position in the pooling grid
        pixel = side // 2 + offset
        gradients = rf.gradient_map(model, x, (pixel, pixel))
        first, last = rf.field_at(cfg, pixel)
        rows = np.nonzero(gradients.sum(1))[0]
        assert (rows.min(), rows.max()) == (first, last)
        sizes.append(rf.support(gradients))
    assert max(sizes) == rf.theoretical(cfg)


def test_extent_is_the_smallest_centred_square_with_95_percent_of_the_mass():
    gradients = np.zeros((11, 11))
    gradients[5, 5] = 90.0
    gradients[4, 5] = 4.0  # within 1 of the centre: 94 in the 3x3 square
    gradients[5, 8] = 6.0  # 3 from the centre: the 7x7 square reaches 100
    assert rf.extent(gradients) == 7
    assert rf.extent(gradients, mass=0.9) == 1
    assert rf.support(gradients) == 4  # rows 4..5, columns 5..8
