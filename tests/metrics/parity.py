"""Our metrics against the standard reference implementations, on seeded random inputs.

Each check takes a NumPy Generator and returns (ours, reference) as arrays of numbers. The tests assert
they agree to 1e-6 on five seeds; benchmarks/metrics_parity.py prints the largest difference over
many. References: scikit-learn, pycocotools, scikit-image, NLTK and SciPy; where none exists
(NMS, PCK, depth, Inception Score) a NumPy transcription of the published code or definition.
"""

import contextlib
import io
import warnings

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
import scipy.stats
import skimage.metrics
import sklearn.metrics
from nltk.metrics.distance import edit_distance
from nltk.translate.bleu_score import SmoothingFunction
from nltk.translate.bleu_score import corpus_bleu as nltk_corpus_bleu
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from tfcourse import metrics

TOLERANCE = 1e-6
CHECKS = {}  # module name -> {check name: check(rng) -> (ours, reference)}


def check(module, name):
    def register(function):
        CHECKS.setdefault(module, {})[name] = function
        return function

    return register


def max_abs_difference(ours, reference):
    """Largest |ours - reference|; equal values (NaN with NaN, inf with inf) differ by 0, a shape mismatch by inf."""
    ours, reference = np.asarray(ours, float).ravel(), np.asarray(reference, float).ravel()
    if ours.shape != reference.shape:
        return float("inf")
    same = (ours == reference) | (np.isnan(ours) & np.isnan(reference))
    with np.errstate(invalid="ignore"):
        differences = np.where(same, 0.0, np.abs(ours - reference))
    return float(np.max(np.nan_to_num(differences, nan=np.inf), initial=0.0))


def run(module, name, seed):
    return max_abs_difference(*CHECKS[module][name](np.random.default_rng(seed)))


# ---------------------------------------------------------------- classification (scikit-learn)

def _labels_and_predictions(rng, num_classes=5, n=200):
    y_true = rng.integers(0, num_classes, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, num_classes, n))
    return y_true, y_pred


def _tied_scores(rng, y_true, decimals=1):
    """Scores that lean toward the positives, rounded so that many tie."""
    return np.round(rng.random(len(y_true)) * 0.7 + 0.3 * y_true, decimals)


@check("classification", "accuracy")
def _accuracy(rng):
    y_true, y_pred = _labels_and_predictions(rng)
    return metrics.accuracy(y_true, y_pred), sklearn.metrics.accuracy_score(y_true, y_pred)


@check("classification", "top-3 accuracy")
def _top_k(rng):
    y_true, _ = _labels_and_predictions(rng, num_classes=6)
    scores = rng.random((len(y_true), 6)) + 0.3 * np.eye(6)[y_true]
    return (metrics.top_k_accuracy(y_true, scores, k=3),
            sklearn.metrics.top_k_accuracy_score(y_true, scores, k=3, labels=range(6)))


@check("classification", "confusion matrix")
def _confusion(rng):
    y_true, y_pred = _labels_and_predictions(rng, num_classes=6)
    y_pred[y_pred == 5] = 4  # class 5 never predicted
    reference = sklearn.metrics.confusion_matrix(y_true, y_pred, labels=range(6))
    return metrics.confusion_matrix(y_true, y_pred, 6), reference


def _precision_recall_f1_check(average):
    def compare(rng):
        y_true, y_pred = _labels_and_predictions(rng, num_classes=6)
        y_pred[y_pred == 5] = 4  # class 5 never predicted: its precision is 0 by convention
        ours = metrics.precision_recall_f1(y_true, y_pred, 6, average=average)
        reference = sklearn.metrics.precision_recall_fscore_support(
            y_true, y_pred, labels=range(6), average=average, zero_division=0)[:3]
        return np.hstack(ours), np.hstack(reference)

    return compare


for _average in (None, "macro", "micro", "weighted"):
    check("classification", f"precision/recall/F1 average={_average}")(_precision_recall_f1_check(_average))


@check("classification", "classification_report F1")
def _report(rng):
    y_true, y_pred = _labels_and_predictions(rng)
    report = metrics.classification_report(y_true, y_pred, list("abcde"))
    ours = [report["accuracy"], report["macro_f1"], report["weighted_f1"]]
    reference = [sklearn.metrics.accuracy_score(y_true, y_pred),
                 sklearn.metrics.f1_score(y_true, y_pred, average="macro", labels=range(5), zero_division=0),
                 sklearn.metrics.f1_score(y_true, y_pred, average="weighted", labels=range(5), zero_division=0)]
    return ours, reference


@check("classification", "roc_curve with tied scores")
def _roc_curve(rng):
    y_true = rng.integers(0, 2, 150)
    scores = _tied_scores(rng, y_true)
    return (np.hstack(metrics.roc_curve(y_true, scores)),
            np.hstack(sklearn.metrics.roc_curve(y_true, scores, drop_intermediate=False)))


@check("classification", "roc_auc with tied scores")
def _roc_auc(rng):
    y_true = rng.integers(0, 2, 150)
    scores = _tied_scores(rng, y_true, decimals=int(rng.integers(1, 3)))
    return metrics.roc_auc(y_true, scores), sklearn.metrics.roc_auc_score(y_true, scores)


@check("classification", "roc_auc one-vs-rest macro")
def _roc_auc_ovr(rng):
    y_true, _ = _labels_and_predictions(rng, num_classes=4)
    probabilities = scipy.special.softmax(rng.normal(size=(len(y_true), 4)) + np.eye(4)[y_true], axis=1)
    return (metrics.roc_auc_ovr(y_true, probabilities),
            sklearn.metrics.roc_auc_score(y_true, probabilities, multi_class="ovr", average="macro"))


# ---------------------------------------------------------------- detection (pycocotools)

def random_boxes_xywh(rng, n, image_size=100.0):
    corner = rng.uniform(0, image_size * 0.8, (n, 2))
    size = rng.uniform(2, image_size * 0.4, (n, 2))
    return np.hstack([corner, size])


def _detection_scene(rng, num_images=8, num_classes=3):
    """Per-image xywh ground truth and detections: jittered copies of the truth plus false positives.

    Class `num_classes` appears only among detections; scores are rounded so that many tie.
    """
    scene = {key: [] for key in ("gt_boxes", "gt_labels", "det_boxes", "det_scores", "det_labels")}
    for _ in range(num_images):
        num_truths = int(rng.integers(0, 6))
        truths, gt_labels = random_boxes_xywh(rng, num_truths), rng.integers(0, num_classes, num_truths)
        found = rng.random(num_truths) < 0.8
        sizes = np.tile(truths[found, 2:], 2)
        jittered = truths[found] + rng.normal(0, 0.1, (found.sum(), 4)) * sizes
        jittered[:, 2:] = np.abs(jittered[:, 2:])
        num_false = int(rng.integers(0, 5))
        scene["gt_boxes"].append(truths)
        scene["gt_labels"].append(gt_labels)
        scene["det_boxes"].append(np.vstack([jittered, random_boxes_xywh(rng, num_false)]))
        scene["det_scores"].append(np.round(rng.random(found.sum() + num_false), 1))
        scene["det_labels"].append(np.r_[gt_labels[found], rng.integers(0, num_classes + 1, num_false)])
    return scene


def coco_evaluate(scene, max_detections=(1, 10, 100)):
    """COCOeval (bbox) of a scene of per-image xywh arrays, accumulated; and its sorted class ids."""
    classes = sorted(set(np.concatenate(scene["gt_labels"] + scene["det_labels"]).tolist()))
    annotations, detections = [], []
    for i in range(len(scene["gt_boxes"])):
        for box, label in zip(scene["gt_boxes"][i], scene["gt_labels"][i]):
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label),
                                "bbox": box.tolist(), "area": float(box[2] * box[3]), "iscrowd": 0})
        for box, score, label in zip(scene["det_boxes"][i], scene["det_scores"][i], scene["det_labels"][i]):
            detections.append({"image_id": i + 1, "category_id": int(label), "bbox": box.tolist(),
                               "score": float(score)})
    truth = COCO()
    truth.dataset = {"images": [{"id": i + 1} for i in range(len(scene["gt_boxes"]))],
                     "categories": [{"id": c} for c in classes], "annotations": annotations}
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(detections), "bbox")
        evaluator.params.maxDets = list(max_detections)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator, classes


def _coco_class_ap(evaluator, class_index, threshold_index, max_detections_index=-1):
    precision = evaluator.eval["precision"][threshold_index, :, class_index, 0, max_detections_index]
    return np.nan if precision[0] == -1 else precision.mean()


def _per_class(scene, c):
    return ([b[l == c] for b, l in zip(scene["gt_boxes"], scene["gt_labels"])],
            [b[l == c] for b, l in zip(scene["det_boxes"], scene["det_labels"])],
            [s[l == c] for s, l in zip(scene["det_scores"], scene["det_labels"])])


@check("detection", "box_iou xywh and xyxy")
def _box_iou(rng):
    a, b = random_boxes_xywh(rng, 12), random_boxes_xywh(rng, 9)
    b[:3] = a[:3]  # some identical boxes
    b[3, 2:] = 0  # a zero-area box
    xyxy = lambda boxes: np.hstack([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]])  # noqa: E731
    ours = np.stack([metrics.box_iou(a, b, "xywh"), metrics.box_iou(xyxy(a), xyxy(b), "xyxy")])
    reference = coco_mask.iou(a.tolist(), b.tolist(), [0] * len(b))
    return ours, np.stack([reference, reference])


@check("detection", "AP@0.5 and AP@0.75 per class, tied scores")
def _average_precision(rng):
    scene = _detection_scene(rng)
    evaluator, classes = coco_evaluate(scene)
    ours, reference = [], []
    for k, c in enumerate(classes):
        for threshold_index, threshold in ((0, 0.5), (5, 0.75)):
            ours.append(metrics.average_precision(*_per_class(scene, c), iou_threshold=threshold, box_format="xywh"))
            reference.append(_coco_class_ap(evaluator, k, threshold_index))
    return ours, reference


@check("detection", "AP@[.5:.95] with max_detections=3")
def _average_precision_truncated(rng):
    scene = _detection_scene(rng)
    evaluator, classes = coco_evaluate(scene, max_detections=(1, 3, 100))
    ours = [metrics.mean_average_precision(*_per_class(scene, c)[:1], [l[l == c] for l in scene["gt_labels"]],
                                           *_per_class(scene, c)[1:], [l[l == c] for l in scene["det_labels"]],
                                           box_format="xywh", max_detections=3)
            for c in classes]
    reference = [np.mean([_coco_class_ap(evaluator, k, t, 1) for t in range(10)]) for k in range(len(classes))]
    return ours, reference


@check("detection", "mAP@[.5:.95] (COCO stats[0])")
def _mean_average_precision(rng):
    scene = _detection_scene(rng, num_images=12)
    evaluator, _ = coco_evaluate(scene)
    ours = metrics.mean_average_precision(scene["gt_boxes"], scene["gt_labels"], scene["det_boxes"],
                                          scene["det_scores"], scene["det_labels"], box_format="xywh")
    return ours, evaluator.stats[0]


def greedy_nms(boxes_xyxy, scores, iou_threshold):
    """The textbook greedy NMS: keep the best box, drop those overlapping it by IoU > threshold, repeat."""
    order, kept = list(np.argsort(-scores, kind="stable")), []
    while order:
        best = order.pop(0)
        kept.append(best)
        order = [i for i in order if metrics.box_iou(boxes_xyxy[[best]], boxes_xyxy[[i]])[0, 0] <= iou_threshold]
    return np.array(kept)


@check("detection", "NMS kept boxes (vs NumPy greedy transcription)")
def _nms(rng):
    boxes = random_boxes_xywh(rng, 40, image_size=50.0)
    boxes[:, 2:] += boxes[:, :2]
    scores = rng.random(40)
    kept = np.zeros(40)
    kept[metrics.non_max_suppression(boxes, scores, iou_threshold=0.4)] = 1
    reference = np.zeros(40)
    reference[greedy_nms(boxes, scores, 0.4)] = 1
    return kept, reference


# ---------------------------------------------------------------- segmentation (scikit-learn)

def _label_maps(rng, num_classes=4):
    y_true = rng.integers(0, num_classes, (2, 16, 16))
    y_pred = np.where(rng.random(y_true.shape) < 0.7, y_true, rng.integers(0, num_classes, y_true.shape))
    return y_true, y_pred


@check("segmentation", "pixel accuracy, per-class IoU and Dice")
def _segmentation(rng):
    y_true, y_pred = _label_maps(rng)
    ours = [metrics.pixel_accuracy(y_true, y_pred, 4), *metrics.per_class_iou(y_true, y_pred, 4),
            *metrics.per_class_dice(y_true, y_pred, 4), metrics.mean_iou(y_true, y_pred, 4),
            metrics.mean_dice(y_true, y_pred, 4)]
    t, p = y_true.ravel(), y_pred.ravel()
    iou = sklearn.metrics.jaccard_score(t, p, labels=range(4), average=None)
    dice = sklearn.metrics.f1_score(t, p, labels=range(4), average=None)
    return ours, [sklearn.metrics.accuracy_score(t, p), *iou, *dice, iou.mean(), dice.mean()]


@check("segmentation", "mIoU with ignore_index=255")
def _segmentation_ignore(rng):
    y_true, y_pred = _label_maps(rng)
    y_true[rng.random(y_true.shape) < 0.2] = 255
    scored = y_true != 255
    return (metrics.mean_iou(y_true, y_pred, 4, ignore_index=255),
            sklearn.metrics.jaccard_score(y_true[scored], y_pred[scored], labels=range(4), average="macro"))


# ---------------------------------------------------------------- pose (pycocotools; mmpose transcription)

def _pose_scene(rng, num_truths=4, num_detections=6, num_keypoints=17):
    targets = rng.uniform(20, 180, (num_truths, num_keypoints, 2))
    visibility = rng.choice([0, 1, 2], (num_truths, num_keypoints), p=[0.3, 0.2, 0.5])
    visibility[0] = 0  # a ground truth with no labelled keypoint: COCO scores it against its box
    boxes = np.hstack([targets.min(axis=1), targets.max(axis=1) - targets.min(axis=1)])  # xywh
    areas = boxes[:, 2] * boxes[:, 3] * rng.uniform(0.3, 0.8, num_truths)
    owner = rng.integers(0, num_truths, num_detections)
    predicted = targets[owner] + rng.normal(0, 6, (num_detections, num_keypoints, 2))
    return predicted, targets, visibility, areas, boxes


@check("pose", "OKS (COCOeval.computeOks)")
def _oks(rng):
    predicted, targets, visibility, areas, boxes = _pose_scene(rng)
    ours = metrics.object_keypoint_similarity(predicted, targets, visibility, areas, target_boxes=boxes,
                                              box_format="xywh")
    truth = COCO()
    truth.dataset = {
        "images": [{"id": 1}], "categories": [{"id": 1}],
        "annotations": [{"id": j + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": float(area),
                         "bbox": box.tolist(), "num_keypoints": int(np.count_nonzero(v)),
                         "keypoints": np.column_stack([xy, v]).ravel().tolist()}
                        for j, (xy, v, area, box) in enumerate(zip(targets, visibility, areas, boxes))],
    }
    detections = [{"image_id": 1, "category_id": 1, "score": 1.0 - i / 100,
                   "keypoints": np.column_stack([xy, np.ones(len(xy))]).ravel().tolist()}
                  for i, xy in enumerate(predicted)]
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        evaluator = COCOeval(truth, truth.loadRes(detections), "keypoints")
        evaluator.evaluate()
    return ours, evaluator.ious[(1, 1)]


def mmpose_pck(predicted, target, mask, alpha, norm_size):
    """mmpose's keypoint_pck_accuracy (mmpose/evaluation/functional/keypoint_eval.py), in NumPy."""
    norm_factor = np.repeat(norm_size[:, None], 2, axis=1)
    mask = mask.copy()
    mask[np.where((norm_factor == 0).sum(1))[0], :] = False
    distances = np.full(mask.shape, -1, dtype=np.float64)
    norm_factor[np.where(norm_factor <= 0)] = 1e6
    distances[mask] = np.linalg.norm(((predicted - target) / norm_factor[:, None, :])[mask], axis=-1)
    accuracies = []
    for per_keypoint in distances.T:
        valid = per_keypoint != -1
        accuracies.append((per_keypoint[valid] < alpha).sum() / valid.sum() if valid.any() else -1)
    accuracies = np.array(accuracies)
    return accuracies[accuracies >= 0].mean()


@check("pose", "PCK@0.2 by bbox and torso (vs mmpose transcription)")
def _pck(rng):
    predicted, targets, visibility, _, boxes = _pose_scene(rng, num_truths=30, num_detections=30)
    predicted = targets + rng.normal(0, 12, targets.shape)
    visible = visibility > 0
    box_size = boxes[:, 2:].max(axis=1)
    torso = np.linalg.norm(targets[:, 5] - targets[:, 12], axis=1) * (visible[:, 5] & visible[:, 12])
    ours = [metrics.pck(predicted, targets, visible, 0.2, "bbox", boxes=boxes, box_format="xywh"),
            metrics.pck(predicted, targets, visible, 0.2, "torso", torso_pair=(5, 12))]
    reference = [mmpose_pck(predicted, targets, visible, 0.2, box_size),
                 mmpose_pck(predicted, targets, visible, 0.2, torso)]
    return ours, reference


# ---------------------------------------------------------------- verification (scikit-learn; SciPy)

def _verification_scores(rng, decimals=None):
    genuine, impostor = rng.normal(1.0, 0.7, 120), rng.normal(0.0, 0.7, 300)
    if decimals is not None:
        genuine, impostor = np.round(genuine, decimals), np.round(impostor, decimals)
    return genuine, impostor


def _sklearn_roc(genuine, impostor):
    return sklearn.metrics.roc_curve(np.r_[np.ones(len(genuine)), np.zeros(len(impostor))], np.r_[genuine, impostor],
                                     drop_intermediate=False)


@check("verification", "FAR and FRR at every threshold")
def _far_frr(rng):
    genuine, impostor = _verification_scores(rng, decimals=1)
    false_accept_rate, true_accept_rate, thresholds = _sklearn_roc(genuine, impostor)
    return np.hstack(metrics.far_frr(genuine, impostor, thresholds[1:])), np.hstack(
        [false_accept_rate[1:], 1 - true_accept_rate[1:]])


@check("verification", "ROC curve, tied scores")
def _verification_roc(rng):
    genuine, impostor = _verification_scores(rng, decimals=1)
    return np.hstack(metrics.verification_roc_curve(genuine, impostor)), np.hstack(_sklearn_roc(genuine, impostor))


@check("verification", "EER (vs brentq on interpolated ROC)")
def _eer(rng):
    genuine, impostor = _verification_scores(rng)
    false_accept_rate, true_accept_rate, _ = _sklearn_roc(genuine, impostor)
    reference = scipy.optimize.brentq(
        lambda x: 1 - x - np.interp(x, false_accept_rate, true_accept_rate), 0, 1, xtol=1e-12)
    return metrics.equal_error_rate(genuine, impostor)[0], reference


# ---------------------------------------------------------------- text (NLTK)

_WORDS = "the a cat dog sat on mat and ran to big red".split()


def _sentence(rng, low=0, high=9):
    return " ".join(rng.choice(_WORDS, int(rng.integers(low, high))))


def _edited(rng, sentence):
    """`sentence` with some words dropped and a few random ones added."""
    return " ".join([w for w in sentence.split() if rng.random() < 0.8] + _sentence(rng, 0, 3).split())


def _text_pairs(rng, n=20):
    references = [_sentence(rng, 1) for _ in range(n)]
    return references, [_edited(rng, r) for r in references]


@check("text", "CER and WER (vs nltk.edit_distance)")
def _error_rates(rng):
    references, hypotheses = _text_pairs(rng)
    references[0], hypotheses[1] = "très café 中文", ""
    cer = sum(edit_distance(r, h) for r, h in zip(references, hypotheses)) / sum(len(r) for r in references)
    wer = (sum(edit_distance(r.split(), h.split()) for r, h in zip(references, hypotheses))
           / sum(len(r.split()) for r in references))
    ours = [metrics.character_error_rate(references, hypotheses), metrics.word_error_rate(references, hypotheses)]
    return ours, [cer, wer]


NLTK_SMOOTHING = {"none": "method0", "epsilon": "method1", "add-one": "method2", "exp": "method3"}


def _bleu_check(smoothing):
    def compare(rng):
        n = int(rng.integers(1, 6))  # small corpora, so that some orders have no match at all
        references = [[_sentence(rng, 1, 9) for _ in range(int(rng.integers(1, 4)))] for _ in range(n)]
        hypotheses = [(_edited(rng, refs[0]) if rng.random() < 0.5 else _sentence(rng, 0, 5)).split()
                      for refs in references]
        references = [[r.split() for r in refs] for refs in references]
        method = getattr(SmoothingFunction(), NLTK_SMOOTHING[smoothing])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NLTK's method0 warns about orders with no match
            reference = [nltk_corpus_bleu(references, hypotheses, weights=(1 / order,) * order,
                                          smoothing_function=method) for order in (1, 2, 3, 4)]
        ours = [metrics.corpus_bleu(references, hypotheses, order, smoothing) for order in (1, 2, 3, 4)]
        return ours, reference

    return compare


for _smoothing in NLTK_SMOOTHING:
    check("text", f"BLEU-1..4 smoothing={_smoothing}")(_bleu_check(_smoothing))


# ---------------------------------------------------------------- images (scikit-image)

def _image_pairs(rng, data_range):
    clean = rng.uniform(0, data_range, (3, 24, 28, 3))
    clean = (clean + np.roll(clean, 1, axis=1)) / 2  # some spatial structure
    noisy = np.clip(clean + rng.normal(0, data_range * 0.1, clean.shape), 0, data_range)
    return clean, noisy


def _image_check(function, reference, **options):
    def compare(rng):
        data_range = float(rng.choice([1.0, 255.0]))
        clean, noisy = _image_pairs(rng, data_range)
        return function(clean, noisy, data_range), [reference(a, b, data_range=data_range, **options)
                                                    for a, b in zip(clean, noisy)]

    return compare


check("images", "PSNR")(_image_check(metrics.psnr, skimage.metrics.peak_signal_noise_ratio))
check("images", "SSIM (11x11 Gaussian, sigma 1.5)")(_image_check(
    metrics.ssim, skimage.metrics.structural_similarity, channel_axis=-1, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False))


# ---------------------------------------------------------------- depth (monodepth2 transcription)

def monodepth2_errors(gt, pred):
    """compute_errors of monodepth2 (Godard et al. 2019), plus the MAE, on already masked pixels."""
    thresh = np.maximum((gt / pred), (pred / gt))
    a1, a2, a3 = ((thresh < 1.25**k).mean() for k in (1, 2, 3))
    rmse = np.sqrt(((gt - pred) ** 2).mean())
    abs_rel = np.mean(np.abs(gt - pred) / gt)
    sq_rel = np.mean(((gt - pred) ** 2) / gt)
    return [rmse, np.mean(np.abs(gt - pred)), abs_rel, sq_rel, a1, a2, a3]


@check("depth", "RMSE, MAE, AbsRel, SqRel, delta<1.25^k (vs monodepth2 transcription)")
def _depth(rng):
    target = rng.uniform(1, 80, (2, 20, 30)) * (rng.random((2, 20, 30)) < 0.7)  # 30% without ground truth
    predicted = np.clip(target * rng.lognormal(0, 0.25, target.shape), 1e-3, 80)
    ours = metrics.depth_metrics(predicted, target)
    valid = target > 0
    return [ours[key] for key in metrics.depth.METRICS], monodepth2_errors(target[valid], predicted[valid])


# ---------------------------------------------------------------- generation (SciPy)

def pytorch_fid_distance(real, generated):
    """calculate_frechet_distance of pytorch-fid, with scipy.linalg.sqrtm."""
    mu1, mu2 = real.mean(axis=0), generated.mean(axis=0)
    sigma1, sigma2 = np.cov(real, rowvar=False), np.cov(generated, rowvar=False)
    covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    diff = mu1 - mu2
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


@check("generation", "FID (vs scipy.linalg.sqrtm)")
def _fid(rng):
    dimensions = int(rng.integers(4, 16))
    real = rng.normal(size=(200, dimensions)) @ rng.normal(size=(dimensions, dimensions))
    generated = rng.normal(0.3, 1.2, (150, dimensions)) @ rng.normal(size=(dimensions, dimensions))
    return metrics.frechet_inception_distance(real, generated), pytorch_fid_distance(real, generated)


def improved_gan_inception_score(logits, splits):
    """The Inception Score of Salimans et al. (improved-gan), with scipy.stats.entropy as KL."""
    predictions = scipy.special.softmax(logits, axis=1)
    scores = []
    for i in range(splits):
        part = predictions[i * len(predictions) // splits: (i + 1) * len(predictions) // splits]
        marginal = part.mean(axis=0)
        scores.append(np.exp(np.mean([scipy.stats.entropy(row, marginal) for row in part])))
    return np.mean(scores), np.std(scores)


@check("generation", "Inception Score, 1 and 5 splits (vs improved-gan transcription)")
def _inception_score(rng):
    logits = rng.normal(0, 3, (103, 10))
    ours = [metrics.inception_score(logits, 1), metrics.inception_score(logits, 5)]
    reference = [improved_gan_inception_score(logits, 1), improved_gan_inception_score(logits, 5)]
    return np.hstack(ours), np.hstack(reference)
