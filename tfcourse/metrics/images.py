"""Image quality metrics: PSNR and SSIM (Wang et al. 2004). Conventions:

- Images are [..., height, width, channels] arrays (one image, or any batch of them), compared in
  float64. `data_range` is the span of possible values: 255 for uint8, 1.0 for floats in [0, 1].
  A single image gives a float, a batch an array of its leading shape.
- PSNR = 10 log10(data_range^2 / MSE), the MSE over all pixels and channels of an image; +inf for
  identical images.
- SSIM uses an 11x11 Gaussian window (sigma 1.5, truncated at 3.5 sigma as scikit-image does),
  K1 = 0.01, K2 = 0.03, population (not sample) variances, 'valid' window positions only (no
  padding), averaged over positions and then channels; images must be at least 11x11. This is
  scikit-image's structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
  and tf.image.ssim's definition. Identical images have SSIM 1.
"""

import numpy as np

from tfcourse.metrics import _validate

SSIM_SIGMA, SSIM_RADIUS, SSIM_K1, SSIM_K2 = 1.5, 5, 0.01, 0.03  # radius = int(3.5 sigma + 0.5)


def _image_pair(image_a, image_b, data_range):
    image_a = _validate.numbers("image_a", image_a)
    image_b = _validate.numbers("image_b", image_b)
    if image_a.ndim < 3:
        raise ValueError(f"image_a must be [..., height, width, channels], got shape {image_a.shape}.")
    _validate.same_shape("image_a", image_a, "image_b", image_b)
    data_range = _validate.number_in("data_range", data_range, 0, np.inf, low_open=True, high_open=True)
    return image_a, image_b, data_range


def _per_image(values):
    return float(values) if values.ndim == 0 else values


# tf.image.psnr computes in float32 (a few 1e-6 dB off); this is the same formula in float64.
def psnr(image_a, image_b, data_range):
    """Peak signal-to-noise ratio in dB; +inf for identical images."""
    image_a, image_b, data_range = _image_pair(image_a, image_b, data_range)
    mse = np.mean((image_a - image_b) ** 2, axis=(-3, -2, -1))
    with np.errstate(divide="ignore"):
        return _per_image(10 * np.log10(data_range**2 / mse))


def _gaussian_window():
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1)
    weights = np.exp(-(offsets**2) / (2 * SSIM_SIGMA**2))
    return weights / weights.sum()


def _filter(images, window):
    """Separable 'valid' filtering of [..., h, w, c] images."""
    rows = np.lib.stride_tricks.sliding_window_view(images, len(window), axis=-3) @ window
    return np.lib.stride_tricks.sliding_window_view(rows, len(window), axis=-2) @ window


# tf.image.ssim computes in float32 (about 1e-6 off); this is the same definition in float64.
def ssim(image_a, image_b, data_range):
    """Structural similarity in [-1, 1] with the standard 11x11 Gaussian window; see module doc."""
    image_a, image_b, data_range = _image_pair(image_a, image_b, data_range)
    size = 2 * SSIM_RADIUS + 1
    if image_a.shape[-3] < size or image_a.shape[-2] < size:
        raise ValueError(f"image_a and image_b must be at least {size}x{size} for SSIM, got shape {image_a.shape}.")
    window = _gaussian_window()
    mean_a, mean_b = _filter(image_a, window), _filter(image_b, window)
    variance_a = _filter(image_a * image_a, window) - mean_a**2
    variance_b = _filter(image_b * image_b, window) - mean_b**2
    covariance = _filter(image_a * image_b, window) - mean_a * mean_b
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    similarity = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (variance_a + variance_b + c2)
    )
    return _per_image(similarity.mean(axis=(-3, -2)).mean(axis=-1))
