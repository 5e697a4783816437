import math

import numpy as np
import pytest

from tests.metrics import parity
from tfcourse import metrics


def test_psnr_hand_worked_and_identical_images():
    a = np.zeros((2, 2, 1))
    assert metrics.psnr(a, a + 1, 255) == pytest.approx(10 * math.log10(255**2))
    assert metrics.psnr(a, a + [[[0], [0]], [[0], [2]]], 1.0) == pytest.approx(10 * math.log10(1 / 1))
    assert metrics.psnr(a, a, 1.0) == math.inf


def test_batches_give_one_value_per_image():
    rng = np.random.default_rng(0)
    batch = rng.uniform(0, 1, (2, 3, 16, 16, 3))
    noisy = np.clip(batch + rng.normal(0, 0.1, batch.shape), 0, 1)
    assert metrics.psnr(batch, noisy, 1.0).shape == (2, 3)
    values = metrics.ssim(batch, noisy, 1.0)
    assert values.shape == (2, 3) and values[1, 2] == pytest.approx(metrics.ssim(batch[1, 2], noisy[1, 2], 1.0))


def test_ssim_of_identical_images_is_one_and_of_two_constants_is_the_luminance_term():
    image = np.random.default_rng(1).uniform(0, 255, (12, 13, 3)).astype(np.uint8)
    assert metrics.ssim(image, image, 255) == pytest.approx(1.0, abs=1e-12)
    # constant 0 vs constant 1 (data range 1): no variance, so SSIM = (0 + C1) / (0 + 1 + C1), C1 = 0.01^2
    assert metrics.ssim(np.zeros((11, 11, 1)), np.ones((11, 11, 1)), 1.0) == pytest.approx(1e-4 / (1 + 1e-4))


def test_ssim_is_symmetric_bounded_and_falls_with_noise():
    rng = np.random.default_rng(2)
    clean = rng.uniform(0, 1, (24, 24, 1))
    slightly, very = (np.clip(clean + rng.normal(0, s, clean.shape), 0, 1) for s in (0.05, 0.3))
    assert metrics.ssim(clean, very, 1.0) == pytest.approx(metrics.ssim(very, clean, 1.0), abs=1e-15)
    assert 0 < metrics.ssim(clean, very, 1.0) < metrics.ssim(clean, slightly, 1.0) < 1
    assert metrics.psnr(clean, very, 1.0) < metrics.psnr(clean, slightly, 1.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: metrics.ssim(np.zeros((10, 12, 1)), np.zeros((10, 12, 1)), 1.0), "at least 11x11"),
        (lambda: metrics.psnr(np.zeros((4, 4)), np.zeros((4, 4)), 1.0), r"\[..., height, width, channels\]"),
        (lambda: metrics.psnr(np.zeros((4, 4, 1)), np.zeros((4, 4, 3)), 1.0), "same shape"),
        (lambda: metrics.psnr(np.zeros((4, 4, 1)), np.zeros((4, 4, 1)), 0), "data_range must be in"),
        (lambda: metrics.psnr(np.zeros((4, 4, 1), bool), np.zeros((4, 4, 1)), 1), "image_a must hold real numbers"),
        (lambda: metrics.ssim(np.full((11, 11, 1), np.nan), np.zeros((11, 11, 1)), 1), "image_a has NaN"),
    ],
)
def test_rejects_bad_inputs_with_a_message(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", parity.CHECKS["images"])
def test_agrees_with_scikit_image(name, seed):
    assert parity.run("images", name, seed) <= parity.TOLERANCE
