"""Verification (face, speaker, signature) metrics. Conventions:

- `genuine_scores` are the similarity scores of same-identity pairs and `impostor_scores` those of
  different-identity pairs: 1-D, finite, neither empty. Higher means more alike, and a pair is
  accepted when its score >= the threshold.
- FAR(t) = fraction of impostor scores >= t; FRR(t) = fraction of genuine scores < t.
- The ROC curve is `classification.roc_curve` with genuine pairs as positives: (FAR, 1 - FRR) at every
  distinct score, highest first, from the reject-all point (0, 0) at threshold +inf.
- The EER is where FAR = FRR on that curve taken piecewise linear: between the two adjacent operating
  points where FRR - FAR changes sign, at the crossing of the straight segment (the usual
  brentq-on-interpolated-ROC recipe, in closed form). Its threshold is interpolated the same way
  between those points' thresholds; when the crossing lies next to the reject-all point it is the
  highest score.
"""

import numpy as np

from tfcourse.metrics import _validate
from tfcourse.metrics.classification import roc_curve


def _scores(genuine_scores, impostor_scores):
    genuine = _validate.numbers("genuine_scores", genuine_scores, ndim=1)
    impostor = _validate.numbers("impostor_scores", impostor_scores, ndim=1)
    _validate.non_empty("genuine_scores", genuine)
    _validate.non_empty("impostor_scores", impostor)
    return genuine, impostor


def far_frr(genuine_scores, impostor_scores, thresholds):
    """(FAR, FRR) at each threshold (a number or an array of them)."""
    genuine, impostor = _scores(genuine_scores, impostor_scores)
    thresholds = _validate.numbers("thresholds", thresholds)
    false_accepts = len(impostor) - np.searchsorted(np.sort(impostor), thresholds, side="left")
    false_rejects = np.searchsorted(np.sort(genuine), thresholds, side="left")
    return false_accepts / len(impostor), false_rejects / len(genuine)


def verification_roc_curve(genuine_scores, impostor_scores):
    """(FAR, true accept rate = 1 - FRR, thresholds) at every distinct score, highest first."""
    genuine, impostor = _scores(genuine_scores, impostor_scores)
    is_genuine = np.r_[np.ones(len(genuine), bool), np.zeros(len(impostor), bool)]
    return roc_curve(is_genuine, np.r_[genuine, impostor])


def equal_error_rate(genuine_scores, impostor_scores):
    """(EER, threshold at the EER); see module doc."""
    false_accept_rate, true_accept_rate, thresholds = verification_roc_curve(genuine_scores, impostor_scores)
    gap = (1 - true_accept_rate) - false_accept_rate  # FRR - FAR: 1 at reject-all, falls strictly to -1
    after = int(np.argmax(gap <= 0))
    before = after - 1
    weight = gap[before] / (gap[before] - gap[after])  # 1 when the crossing is on the point itself
    rate = false_accept_rate[before] + weight * (false_accept_rate[after] - false_accept_rate[before])
    if before == 0:
        threshold = thresholds[after]
    else:
        threshold = thresholds[before] + weight * (thresholds[after] - thresholds[before])
    return float(rate), float(threshold)
