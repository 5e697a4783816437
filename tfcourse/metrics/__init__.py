"""Metrics for the lessons, one module per task; every public function is also here.

from tfcourse import metrics; metrics.classification_report(...), metrics.box_iou(...), ... Each
module's docstring gives its conventions and edge cases.
"""

from tfcourse.metrics.classification import (
    accuracy,
    classification_report,
    confusion_matrix,
    precision_recall_f1,
    roc_auc,
    roc_auc_ovr,
    roc_curve,
    top_k_accuracy,
)
from tfcourse.metrics.depth import depth_metrics
from tfcourse.metrics.detection import (
    COCO_IOU_THRESHOLDS,
    average_precision,
    box_iou,
    mean_average_precision,
    non_max_suppression,
)
from tfcourse.metrics.generation import frechet_inception_distance, inception_score
from tfcourse.metrics.images import psnr, ssim
from tfcourse.metrics.pose import COCO_KEYPOINT_SIGMAS, object_keypoint_similarity, pck
from tfcourse.metrics.segmentation import mean_dice, mean_iou, pixel_accuracy, per_class_dice, per_class_iou
from tfcourse.metrics.text import character_error_rate, corpus_bleu, word_error_rate
from tfcourse.metrics.verification import equal_error_rate, far_frr, verification_roc_curve

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "COCO_KEYPOINT_SIGMAS",
    "accuracy",
    "average_precision",
    "box_iou",
    "character_error_rate",
    "classification_report",
    "confusion_matrix",
    "corpus_bleu",
    "depth_metrics",
    "equal_error_rate",
    "far_frr",
    "frechet_inception_distance",
    "inception_score",
    "mean_average_precision",
    "mean_dice",
    "mean_iou",
    "non_max_suppression",
    "object_keypoint_similarity",
    "pck",
    "per_class_dice",
    "per_class_iou",
    "pixel_accuracy",
    "precision_recall_f1",
    "psnr",
    "roc_auc",
    "roc_auc_ovr",
    "roc_curve",
    "ssim",
    "top_k_accuracy",
    "verification_roc_curve",
    "word_error_rate",
]
