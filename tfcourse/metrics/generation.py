"""Generative model metrics from features or logits you computed (e.g. with an Inception network). Conventions:

- FID (Heusel et al. 2017): `real_features` and `generated_features` are [n, d] (e.g. Inception
  pool3, d = 2048), n >= 2 each, n may differ between the sets. Each set gives a mean and an unbiased
  (n - 1) covariance; FID = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2)). The trace of the
  matrix square root is the sum of the square roots of the eigenvalues of S_r^(1/2) S_g S_r^(1/2),
  which is symmetric (eigenvalues below 0 from rounding count as 0): the value pytorch-fid gets with
  scipy.linalg.sqrtm, without its complex round-off.
- Inception Score (Salimans et al. 2016): `logits` [n, classes]; exp(mean_x KL(p(y|x) || p(y))) in each
  of `splits` contiguous parts (part i is rows i n // splits to (i + 1) n // splits, as the original
  code), returned as (mean, standard deviation) over the parts. 1 <= IS <= classes.
"""

import numpy as np

from tfcourse.metrics import _validate


def _mean_covariance(name, features, dimensions=None):
    features = _validate.numbers(name, features, ndim=2)
    if len(features) < 2:
        raise ValueError(f"{name} needs at least 2 samples for a covariance, got {len(features)}.")
    if dimensions is not None and features.shape[1] != dimensions:
        raise ValueError(f"{name} has {features.shape[1]} features per sample, the real ones {dimensions}.")
    return features.mean(axis=0), np.cov(features, rowvar=False, ddof=1).reshape(features.shape[1], -1)


def _psd_sqrt(matrix):
    eigenvalues, eigenvectors = np.linalg.eigh(matrix)
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0, None))) @ eigenvectors.T


def frechet_inception_distance(real_features, generated_features):
    """FID between two sets of feature vectors; 0 for identical sets."""
    mean_real, covariance_real = _mean_covariance("real_features", real_features)
    mean_generated, covariance_generated = _mean_covariance(
        "generated_features", generated_features, len(mean_real))
    root_real = _psd_sqrt(covariance_real)
    product = root_real @ covariance_generated @ root_real
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0, None)).sum()
    distance = np.sum((mean_real - mean_generated) ** 2)
    return float(distance + np.trace(covariance_real) + np.trace(covariance_generated) - 2 * trace_sqrt)


def _log_softmax(logits):
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def inception_score(logits, splits=1):
    """(mean, std) over `splits` parts of exp(E KL(p(y|x) || p(y))), from classifier logits."""
    logits = _validate.numbers("logits", logits, ndim=2)
    splits = _validate.positive_int("splits", splits)
    if len(logits) < splits:
        raise ValueError(f"logits has {len(logits)} rows, fewer than splits={splits}.")
    scores = []
    for i in range(splits):
        log_conditional = _log_softmax(logits[i * len(logits) // splits: (i + 1) * len(logits) // splits])
        conditional = np.exp(log_conditional)
        log_marginal = np.log(conditional.mean(axis=0))
        divergence = np.sum(conditional * (log_conditional - log_marginal), axis=1).mean()
        scores.append(np.exp(divergence))
    return float(np.mean(scores)), float(np.std(scores))
