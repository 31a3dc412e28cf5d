import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tunelab import metrics
from tunelab.metrics import (
    METRIC_NAMES,
    binary_confusion,
    dice,
    iou,
    multiclass_confusion,
    otsu_threshold,
    pixel_accuracy,
    pixel_error,
    score,
)

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# --- NumPy references, written independently of the module -------------------------------------


def confusion_reference(probs: np.ndarray, target: np.ndarray, thresholds: np.ndarray):
    thresholds = np.broadcast_to(thresholds, (len(probs), thresholds.shape[-1]))
    out = np.zeros((*thresholds.shape, 4), dtype=np.int64)
    for i, (p, true) in enumerate(zip(probs, target.astype(bool), strict=True)):
        for j, t in enumerate(thresholds[i]):
            pred = p >= t
            out[i, j] = [(pred & true).sum(), (pred & ~true).sum(), (~pred & true).sum(), 0]
            out[i, j, 3] = p.size - out[i, j, :3].sum()
    return out


def otsu_reference(image: np.ndarray, bins: int) -> float:
    """skimage's threshold_otsu formula on a [0, 1] histogram; the upper class's lower edge."""
    hist, edges = np.histogram(image, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centres = (edges[:-1] + edges[1:]) / 2
    w1, w2 = np.cumsum(hist), np.cumsum(hist[::-1])[::-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        m1 = np.cumsum(hist * centres) / w1
        m2 = (np.cumsum((hist * centres)[::-1]) / w2[::-1])[::-1]
    variance = np.nan_to_num(w1[:-1] * w2[1:] * (m1[:-1] - m2[1:]) ** 2)  # empty side: 0
    return edges[np.argmax(variance) + 1]


def multiclass_reference(pred: np.ndarray, target: np.ndarray, num_classes: int):
    out = np.zeros((len(pred), num_classes, 4), dtype=np.int64)
    for i in range(len(pred)):
        for c in range(num_classes):
            p, t = pred[i] == c, target[i] == c
            out[i, c] = [(p & t).sum(), (p & ~t).sum(), (~p & t).sum(), (~p & ~t).sum()]
    return out


# --- step 1: counts ----------------------------------------------------------------------------


def test_identical_masks_are_perfect():
    mask = (torch.rand(3, 8, 8) > 0.5).long()
    counts = binary_confusion(mask.float(), mask, [0.5])  # (3, 1, 4)
    assert torch.all(iou(counts) == 1) and torch.all(dice(counts) == 1)
    assert torch.all(pixel_error(counts) == 0) and torch.all(pixel_accuracy(counts) == 1)


def test_half_overlap_hand_computed():
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, :, :2] = 1  # left half
    probs = torch.zeros(1, 4, 4)
    probs[0, :2, :] = 0.9  # top half: 4 of its 8 pixels on the target
    counts = binary_confusion(probs, target, [0.5])
    assert counts.tolist() == [[[4, 4, 4, 4]]]
    assert iou(counts).item() == pytest.approx(1 / 3)
    assert dice(counts).item() == pytest.approx(0.5)
    assert pixel_error(counts).item() == pixel_accuracy(counts).item() == 0.5


def test_empty_mask_convention():
    # [both empty, empty target with a false positive, missed target]; leading shape kept
    counts = torch.tensor([[0, 0, 0, 9], [0, 2, 0, 7], [0, 0, 3, 6]]).expand(2, 3, 4)
    assert iou(counts).tolist() == [[1.0, 0.0, 0.0]] * 2
    assert dice(counts).tolist() == [[1.0, 0.0, 0.0]] * 2
    assert pixel_error(counts)[0].tolist() == pytest.approx([0, 2 / 9, 3 / 9])


def test_threshold_is_inclusive():
    probs = torch.tensor([[[0.3, 0.5, 0.7]]])
    counts = binary_confusion(probs, torch.ones(1, 1, 3), [0.5])
    assert counts.tolist() == [[[2, 0, 1, 0]]]


@pytest.mark.parametrize("quantised", [False, True])  # quantised: many ties with thresholds
def test_binary_confusion_matches_reference(quantised):
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(7, 9, 11, generator=gen)
    if quantised:
        probs = (probs * 8).round() / 8
    target = (torch.rand(7, 9, 11, generator=gen) > 0.6).long()
    target[0] = 0  # an empty mask
    shared = torch.tensor([0.5, 0.0, 0.125, 1.0, 0.3, 0.5, 0.75])  # unsorted, a duplicate
    per_image = torch.cat([probs[:, 0, :3], torch.rand(7, 2, generator=gen)], dim=1)  # (7, 5)
    for thresholds in (shared, per_image):
        expected = confusion_reference(probs.numpy(), target.numpy(), thresholds.numpy())
        assert np.array_equal(binary_confusion(probs, target, thresholds).numpy(), expected)
    assert binary_confusion(probs.double(), target.bool(), [0.3]).shape == (7, 1, 4)


@given(
    st.lists(st.floats(0, 1, width=32), min_size=4, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_counts_add_up_and_shrink_with_threshold(values, fg):
    probs, target = torch.tensor(values).view(1, 2, 2), torch.tensor(fg).view(1, 2, 2)
    counts = binary_confusion(probs, target, [0.0, 0.25, 0.5, 0.75, 1.0])  # (1, 5, 4)
    assert torch.all(counts.sum(-1) == 4)
    positives = counts[0, :, 0] + counts[0, :, 1]
    assert torch.all(positives[1:] <= positives[:-1])


@pytest.mark.parametrize("bins", [256, 100, 16])
def test_otsu_matches_reference(bins):
    gen = torch.Generator().manual_seed(1)
    # mixtures of two logistic blobs per image, with varied spread and share
    spread = torch.rand(20, 1, 1, generator=gen) * 3 + 0.5
    share = torch.rand(20, 1, 1, generator=gen)
    centre = torch.where(torch.rand(20, 32, 32, generator=gen) < share, -2.0, 2.0)
    probs = (centre + spread * torch.randn(20, 32, 32, generator=gen)).sigmoid()
    expected = [otsu_reference(image, bins) for image in probs.numpy()]
    assert otsu_threshold(probs, bins).tolist() == pytest.approx(expected)


def test_otsu_separates_bimodal_image():
    gen = torch.Generator().manual_seed(2)
    square = torch.zeros(2, 32, 32, dtype=torch.bool)
    square[0, 8:20, 4:30] = True
    square[1, 20:, :] = True
    probs = torch.where(square, 0.8, 0.15) + 0.04 * torch.randn(2, 32, 32, generator=gen)
    t = otsu_threshold(probs.clamp(0, 1))
    assert torch.all((t > 0.15) & (t < 0.8))  # between the modes' centres
    assert torch.equal(probs >= t[:, None, None], square)


def test_otsu_of_a_flat_image_takes_the_lowest_split():
    flat = torch.tensor([0.0, 0.95]).view(2, 1, 1).expand(2, 4, 4)
    assert otsu_threshold(flat).tolist() == [1 / 256] * 2  # all background, all foreground


def test_multiclass_confusion_matches_reference():
    gen = torch.Generator().manual_seed(3)
    pred = torch.randint(0, 4, (5, 6, 7), generator=gen)
    target = torch.randint(0, 4, (5, 6, 7), generator=gen)
    target[0] = 2  # one class only
    expected = multiclass_reference(pred.numpy(), target.numpy(), 4)
    assert np.array_equal(multiclass_confusion(pred, target, 4).numpy(), expected)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        multiclass_confusion(pred, target, 3)


# --- step 2: reductions ------------------------------------------------------------------------


@given(st.lists(st.integers(0, 10_000), min_size=4, max_size=4))
def test_reduction_properties(counts):
    c = torch.tensor(counts)
    j, d = iou(c).item(), dice(c).item()
    assert 0 <= j <= d <= 1
    assert d == pytest.approx(2 * j / (1 + j))
    if sum(counts):
        assert pixel_error(c).item() + pixel_accuracy(c).item() == pytest.approx(1)


# --- step 3: score -----------------------------------------------------------------------------


def binary_batch():
    probs = [[0.9, 0.4, 0.2, 0.6], [0.9, 0.9, 0.9, 0.4], [0.2, 0.2, 0.4, 0.2]]
    logits = torch.tensor([[logit(p) for p in row] for row in probs]).view(3, 1, 1, 4)
    target = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]).view(3, 1, 4)
    return logits, target, torch.tensor([0, 1, 0]), ["Normal", "Polyp", "Serrated"]


def test_score_binary_names_and_values():
    result = score(*binary_batch(), thresholds=(0.5, 0.3), otsu=True)
    suffixes = ("", "_t0.5", "_t0.3", "_otsu")
    per_class = {f"{m}{s}" for m in METRIC_NAMES for s in suffixes}
    expected_names = per_class | {f"{n}/{c}" for n in per_class for c in ("Normal", "Polyp")}
    expected_names |= {f"foreground_{m}_all" for m in METRIC_NAMES}
    assert set(result) == expected_names  # "Serrated" has no images: omitted
    # per image at 0.5: IoU 1/3, 3/4 and 1 (empty predicted empty); at 0.3: 2/3, 1 and 0
    assert result["iou"] == result["iou_t0.5"] == pytest.approx((1 / 3 + 3 / 4 + 1) / 3)
    assert result["iou/Normal"] == pytest.approx((1 / 3 + 1) / 2)
    assert result["iou/Polyp"] == pytest.approx(3 / 4)
    assert result["dice"] == pytest.approx((1 / 2 + 6 / 7 + 1) / 3)
    assert result["pixel_error"] == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    assert result["accuracy"] == pytest.approx(1 - result["pixel_error"])
    assert result["iou_t0.3"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert result["dice_t0.3/Normal"] == pytest.approx((4 / 5 + 0) / 2)
    # foreground everywhere: IoU is each image's foreground fraction
    assert result["foreground_iou_all"] == pytest.approx((2 / 4 + 1 + 0) / 3)
    assert result["foreground_dice_all"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert result["foreground_pixel_error_all"] == pytest.approx((2 / 4 + 0 + 1) / 3)


def test_score_otsu_uses_each_images_threshold():
    # Otsu splits each image where the between-class variance w0 w1 (m0 - m1)^2 is largest:
    # image 0, values 0.2 | 0.4 0.6 0.9: 1 * 3 * (0.2 - 0.633)^2 = 0.563; 0.2 0.4 | 0.6 0.9:
    #   2 * 2 * (0.3 - 0.75)^2 = 0.81; 0.2 0.4 0.6 | 0.9: 3 * 1 * (0.4 - 0.9)^2 = 0.75. So 0.6 and
    #   0.9 are foreground: tp 1, fp 1, fn 1, IoU 1/3, Dice 1/2.
    # image 1, 0.4 | 0.9 0.9 0.9 (the only split): tp 3, fn 1, IoU 3/4, Dice 6/7.
    # image 2, 0.2 0.2 0.2 | 0.4: the 0.4 pixel is foreground on an empty target: IoU 0, Dice 0.
    # No threshold shared by all images gives these: image 0 needs one in (0.4, 0.6], image 2
    # one <= 0.4 (at 0.5, image 2 is empty predicted empty: IoU 1).
    logits, target, classes, names = binary_batch()
    result = score(logits, target, classes, names, thresholds=(0.5,), otsu=True)
    assert result["iou_otsu"] == pytest.approx((1 / 3 + 3 / 4 + 0) / 3)
    assert result["iou_otsu/Normal"] == pytest.approx((1 / 3 + 0) / 2)
    assert result["iou_otsu/Polyp"] == pytest.approx(3 / 4)
    assert result["dice_otsu"] == pytest.approx((1 / 2 + 6 / 7 + 0) / 3)
    assert "iou_otsu" not in score(logits, target, classes, names, thresholds=(0.5,), otsu=False)


def test_score_otsu_matches_numpy_otsu_on_random_images():
    gen = torch.Generator().manual_seed(5)
    shift = torch.linspace(-2, 2, 8).view(8, 1, 1, 1)  # moves each image's Otsu split off 0.5
    logits = 2 * torch.randn(8, 1, 24, 24, generator=gen) + shift
    target = (torch.rand(8, 24, 24, generator=gen) < 0.4).long()
    result = score(logits, target, torch.zeros(8, dtype=torch.long), ["a"], (0.5,), otsu=True)
    probs, truth = logits[:, 0].sigmoid().numpy(), target.numpy().astype(bool)
    ious = []
    for image, mask in zip(probs, truth, strict=True):
        pred = image >= otsu_reference(image, 256)
        ious.append((pred & mask).sum() / (pred | mask).sum())
    assert result["iou_otsu"] == pytest.approx(np.mean(ious))
    assert result["iou_otsu"] != pytest.approx(result["iou"], abs=1e-3)  # not the 0.5 split


def test_score_multiclass():
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 2, 2]])
    logits = torch.nn.functional.one_hot(pred, 4).permute(0, 2, 1).float().unsqueeze(2)
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 2]]).view(2, 1, 4)
    result = score(logits, target, torch.tensor([0, 1]), ["Normal", "Polyp"], (0.5,), otsu=True)
    # image 0: class 0 IoU 1/2, class 1 IoU 2/3, class 2 absent from both (excluded); image 1: 1
    assert result["iou"] == pytest.approx((7 / 12 + 1) / 2)
    assert result["iou/Normal"] == pytest.approx(7 / 12)
    assert result["dice/Normal"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert result["accuracy"] == pytest.approx((3 / 4 + 1) / 2)
    assert result["pixel_error/Polyp"] == 0
    assert (result["iou_c0"], result["iou_c1"], result["iou_c2"]) == pytest.approx(
        (1 / 2, 2 / 3, 1)
    )
    assert "iou_c3" not in result  # never in a target or a prediction
    assert not any("_t" in name or "otsu" in name or "foreground" in name for name in result)


def test_score_needs_a_threshold():
    with pytest.raises(ValueError, match="threshold"):
        score(*binary_batch(), thresholds=(), otsu=True)


@CUDA
@pytest.mark.parametrize("channels", [1, 3])
def test_score_same_on_cuda(channels):
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(40, channels, 16, 16, generator=gen) * 3
    target = torch.randint(0, max(channels, 2), (40, 16, 16), generator=gen)
    classes = torch.randint(0, 3, (40,), generator=gen)
    args = (["a", "b", "c"], (0.5, 0.3, 0.7), True)
    on_cpu = score(logits, target, classes, *args)
    on_cuda = score(logits.cuda(), target.cuda(), classes.cuda(), *args)
    # sigmoid may differ by an ulp between devices and flip a pixel at a threshold
    assert on_cuda == pytest.approx(on_cpu, abs=1e-3)


def test_names_helpers():
    assert METRIC_NAMES == ("iou", "dice", "pixel_error", "accuracy")
    assert metrics.COUNT_NAMES == ("tp", "fp", "fn", "tn")  # the last dim of every count
    assert metrics.threshold_suffix(0.3) == "_t0.3" and metrics.threshold_suffix(0.25) == "_t0.25"


# --- boundary metrics (MONAI), against hand-worked cases --------------------------------------


def squares(offsets: list[int], size: int = 32) -> torch.Tensor:
    """(N, size, size) masks: an 8x8 square at rows 8..15, columns 8+o..15+o for each offset."""
    masks = torch.zeros(len(offsets), size, size, dtype=torch.long)
    for i, o in enumerate(offsets):
        masks[i, 8:16, 8 + o : 16 + o] = 1
    return masks


def test_hd95_and_nsd_of_two_squares_offset_by_three_pixels():
    # Boundary pixels: 28 per square. Every boundary pixel of one square lies within 3 px of the
    # other's boundary, so HD (and HD95) = 3. Within 2 px (worked by hand, per direction): top
    # and bottom rows 7 + 7 (the column 3 px away is not), the inner side 4 (rows 9, 10, 13, 14
    # of the side column, 1-2 px from the top or bottom row), the outer side 0 (3 px): 18 of 28.
    hd95, nsd = metrics.boundary_scores(squares([0]), squares([3]), 1, tolerance=2.0)
    assert hd95.tolist() == [3.0]
    assert nsd.tolist() == [pytest.approx(18 / 28)]
    _, nsd_at_3 = metrics.boundary_scores(squares([0]), squares([3]), 1, tolerance=3.0)
    assert nsd_at_3.tolist() == [1.0]  # the tolerance is inclusive
    same_hd, same_nsd = metrics.boundary_scores(squares([0]), squares([0]), 1, tolerance=0.0)
    assert same_hd.tolist() == [0.0] and same_nsd.tolist() == [1.0]


def test_boundary_metrics_empty_mask_conventions():
    empty, square = torch.zeros(1, 32, 32, dtype=torch.long), squares([0])
    pred = torch.cat([empty, square, empty])
    target = torch.cat([empty, empty, square])
    hd95, nsd = metrics.boundary_scores(pred, target, 1, tolerance=2.0)
    diagonal = math.hypot(32, 32)  # exactly one side empty: the worst distance the image allows
    assert hd95.tolist() == [0.0, pytest.approx(diagonal), pytest.approx(diagonal)]
    assert nsd.tolist() == [1.0, 0.0, 0.0]


def test_multiclass_boundary_metrics_average_the_classes_present():
    target = squares([0]) + 2 * squares([12])  # class 1 left, class 2 right
    pred = squares([0]) + 2 * squares([15])  # class 2 offset by 3 px
    hd95, nsd = metrics.boundary_scores(pred, target, 3, tolerance=2.0)
    assert hd95.tolist() == [pytest.approx((0 + 3) / 2)]
    assert nsd.tolist() == [pytest.approx((1 + 18 / 28) / 2)]
    only_one = metrics.boundary_scores(squares([0]), squares([0]), 3, tolerance=2.0)
    assert [v.item() for v in only_one] == [0.0, 1.0]  # class 2 absent from both: not averaged
    nothing = torch.zeros(1, 32, 32, dtype=torch.long)
    assert [v.item() for v in metrics.boundary_scores(nothing, nothing, 3, 2.0)] == [0.0, 1.0]


def test_image_scores_add_boundary_metrics_per_image_and_summarise_per_class():
    target = torch.cat([squares([0]), squares([0])])
    logits = torch.where(torch.cat([squares([3]), squares([0])]) > 0, 5.0, -5.0)[:, None]
    by_class, set_only = metrics.image_scores(logits, target, (0.5,), False, boundary_tolerance=2)
    assert by_class["hd95"].tolist() == [3.0, 0.0]
    assert by_class["iou"].tolist() == [pytest.approx(40 / 88), 1.0]  # 5x8 overlap, 11x8 union
    result = metrics.summarise(by_class, set_only, torch.tensor([0, 1]), ["Polyp", "Normal"])
    assert result["hd95"] == 1.5 and result["hd95/Polyp"] == 3.0 and result["hd95/Normal"] == 0
    assert result["nsd"] == pytest.approx((18 / 28 + 1) / 2)
    assert "hd95" not in metrics.image_scores(logits, target, (0.5,), False)[0]
