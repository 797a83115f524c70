"""Boxes from YOLO-style outputs, and how well two sets of boxes agree.

    from deltaonnx.detections import decode_yolo, BoxAgreement
    reference = decode_yolo(dense_output)            # one Detections per batch item
    candidate = decode_yolo(delta_output)
    agreement = BoxAgreement()
    agreement.add(candidate[0], reference[0])
    agreement.f1, agreement.mean_iou

`decode_yolo` reads the anchor-free head of YOLOv8-style exports, [N, 4 + classes, anchors] with boxes as
centre x, centre y, width, height in input pixels (the transposed [N, anchors, 4 + classes] too), and
YOLOv5-style heads with an objectness column (`objectness=True`). Greedy per-class NMS follows.

`match` pairs boxes of the same class greedily by IoU (highest-scoring candidate first, each reference box used
once) and counts true positives (IoU >= iou_threshold), false positives and false negatives; `BoxAgreement`
adds these up over frames into precision, recall, F1 and the mean IoU of matched pairs. Used by `bench`
(delta vs dense boxes) and by `calibrate`, which report three figures:

* strict box F1: delta boxes against dense boxes, both at the score threshold;
* margin box F1 (`match_with_margin`, `MarginBoxAgreement`): a dense box scoring above conf + 0.1 that the
  delta model misses counts, a delta box matching a dense box scoring above conf - 0.1 is no false positive:
  boxes hovering at the threshold flip with any change and say little about the thresholds;
* dense flicker: 1 - the strict F1 of each dense frame's boxes against the previous dense frame's, the
  frame-to-frame noise users of dense ORT already live with (`flicker`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SCORE_MARGIN = 0.1  # the margin box F1 forgives boxes scoring within this of the threshold


@dataclass
class Detections:
    """Boxes of one image: `boxes` [K,4] float32 x1,y1,x2,y2; `scores` [K]; `classes` [K] int64."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.classes = np.asarray(self.classes, dtype=np.int64).reshape(-1)
        if not len(self.boxes) == len(self.scores) == len(self.classes):
            raise ValueError(f"Detections: {len(self.boxes)} boxes, {len(self.scores)} scores and "
                             f"{len(self.classes)} classes must be as many")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def select(self, keep) -> "Detections":
        return Detections(self.boxes[keep], self.scores[keep], self.classes[keep])

    def above(self, conf_threshold: float) -> "Detections":
        """The boxes scoring above conf_threshold (what decode_yolo keeps at that threshold)."""
        return self.select(self.scores > conf_threshold)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32)
    half = boxes[..., 2:4] / 2
    return np.concatenate([boxes[..., 0:2] - half, boxes[..., 0:2] + half], axis=-1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [len(a), len(b)] of x1,y1,x2,y2 boxes (0 where a union is empty)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = 0.45, classes: np.ndarray | None = None,
        max_keep: int | None = None) -> np.ndarray:
    """Indices of the boxes greedy non-maximum suppression keeps, best score first. With `classes`, boxes
    of different classes never suppress each other."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    if classes is not None:  # shift each class to its own region of the plane: one pass handles all classes
        span = float(np.abs(boxes).max()) + 1.0
        boxes = boxes + (np.asarray(classes, np.float64).reshape(-1, 1) * 2 * span)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        best = order[0]
        keep.append(best)
        if max_keep is not None and len(keep) >= max_keep:
            break
        overlaps = box_iou(boxes[best:best + 1], boxes[order[1:]])[0]
        order = order[1:][overlaps <= iou_threshold]
    return np.array(keep, np.int64)


def decode_yolo(output: np.ndarray, *, conf_threshold: float = 0.25, iou_threshold: float = 0.45,
                objectness: bool = False, layout: str = "auto", class_agnostic: bool = False,
                max_detections: int = 300) -> list[Detections]:
    """Boxes of a YOLO head output, one Detections per batch item (coordinates in model-input pixels).

    output: [N, 4 + C, A] (`layout="attributes_first"`, YOLOv8) or [N, A, 4 + C] (`"anchors_first"`),
    with `objectness` an extra column after the box (YOLOv5: score = objectness x class score). "auto" takes
    the smaller of the last two axes as the attribute axis (there are far more anchors than attributes)."""
    output = np.asarray(output, dtype=np.float32)
    if output.ndim == 2:
        output = output[None]
    if output.ndim != 3:
        raise ValueError(f"decode_yolo: expected a [N, 4+C, anchors] output, got shape {output.shape}")
    if layout == "auto":
        layout = "attributes_first" if output.shape[1] <= output.shape[2] else "anchors_first"
    if layout == "attributes_first":
        output = output.transpose(0, 2, 1)
    elif layout != "anchors_first":
        raise ValueError(f"decode_yolo: layout must be auto, attributes_first or anchors_first, got {layout!r}")
    first_class = 5 if objectness else 4
    if output.shape[2] <= first_class:
        raise ValueError(f"decode_yolo: {output.shape[2]} attributes per anchor leave no class scores "
                         f"(box 4{' + objectness 1' if objectness else ''})")
    results = []
    for item in output:  # [A, attributes]
        class_scores = item[:, first_class:]
        if objectness:
            class_scores = class_scores * item[:, 4:5]
        classes = class_scores.argmax(axis=1)
        scores = class_scores[np.arange(len(item)), classes]
        # boxes without area cannot be matched by IoU, not even to themselves: a real head never emits them
        candidates = np.nonzero((scores > conf_threshold) & (item[:, 2] > 0) & (item[:, 3] > 0))[0]
        if candidates.size == 0:
            results.append(Detections.empty())
            continue
        boxes = cxcywh_to_xyxy(item[candidates, :4])
        keep = nms(boxes, scores[candidates], iou_threshold,
                   None if class_agnostic else classes[candidates], max_keep=max_detections)
        results.append(Detections(boxes[keep], scores[candidates][keep], classes[candidates][keep]))
    return results


def decode_with_margin(output: np.ndarray, conf_threshold: float, margin: float = SCORE_MARGIN,
                       **options) -> list[Detections]:
    """decode_yolo down to conf_threshold - margin: what the margin F1 compares; `.above(conf_threshold)` of
    each gives exactly what decode_yolo at conf_threshold keeps (NMS never lets a weaker box remove a
    stronger one)."""
    return decode_yolo(output, conf_threshold=max(conf_threshold - margin, 0.0), **options)


@dataclass
class Match:
    """The outcome of matching one image's candidate boxes against its reference boxes."""

    true_positives: int
    false_positives: int
    false_negatives: int
    ious: np.ndarray  # IoU of each matched pair


def _pairs(candidate: Detections, reference: Detections, iou_threshold: float,
           class_aware: bool) -> list[tuple[int, int, float]]:
    """Greedy one-to-one matching, highest-scoring candidate first, each to the unmatched reference box of
    its class with the highest IoU; (candidate index, reference index, IoU) of each pair with IoU >=
    iou_threshold."""
    if len(candidate) == 0 or len(reference) == 0:
        return []
    ious = box_iou(candidate.boxes, reference.boxes)
    if class_aware:
        ious = np.where(candidate.classes[:, None] == reference.classes[None, :], ious, 0.0)
    used = np.zeros(len(reference), bool)
    pairs = []
    for i in np.argsort(-candidate.scores, kind="stable"):
        row = np.where(used, -1.0, ious[i])
        j = int(row.argmax())
        if row[j] >= iou_threshold and row[j] > 0:
            used[j] = True
            pairs.append((int(i), j, float(row[j])))
    return pairs


def match(candidate: Detections, reference: Detections, iou_threshold: float = 0.5,
          class_aware: bool = True) -> Match:
    """Every box counts: matched pairs (see `_pairs`) are true positives, the other candidates false
    positives, the other reference boxes false negatives."""
    pairs = _pairs(candidate, reference, iou_threshold, class_aware)
    tp = len(pairs)
    return Match(tp, len(candidate) - tp, len(reference) - tp, np.array([iou for _, _, iou in pairs]))


def match_with_margin(candidate: Detections, reference: Detections, conf_threshold: float,
                      margin: float = SCORE_MARGIN,
                      iou_threshold: float = 0.5, class_aware: bool = True) -> Match:
    """Agreement that forgives boxes whose score sits within `margin` of the threshold, where any change of
    the input (or of the model) moves them across it. Both sides decoded at conf_threshold - margin:

    * the candidate's shown boxes (score > conf_threshold) are matched against every reference box;
    * a shown candidate box without a match is a false positive (a match to a reference box scoring only
      conf_threshold - margin .. conf_threshold is not one);
    * a reference box scoring above conf_threshold + margin without a match is a false negative; weaker
      reference boxes left unmatched count for nothing."""
    shown = candidate.above(conf_threshold)
    reference = reference.above(conf_threshold - margin)
    pairs = _pairs(shown, reference, iou_threshold, class_aware)
    matched = np.zeros(len(reference), bool)
    matched[[j for _, j, _ in pairs]] = True
    missed = int(np.count_nonzero(~matched & (reference.scores > conf_threshold + margin)))
    tp = len(pairs)
    return Match(tp, len(shown) - tp, missed, np.array([iou for _, _, iou in pairs]))


@dataclass
class BoxAgreement:
    """Candidate-vs-reference box agreement summed over frames."""

    iou_threshold: float = 0.5
    class_aware: bool = True
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    frames: int = 0
    _iou_sum: float = field(default=0.0, repr=False)

    def _match(self, candidate: Detections, reference: Detections) -> Match:
        return match(candidate, reference, self.iou_threshold, self.class_aware)

    def add(self, candidate: Detections, reference: Detections) -> Match:
        result = self._match(candidate, reference)
        self.true_positives += result.true_positives
        self.false_positives += result.false_positives
        self.false_negatives += result.false_negatives
        self._iou_sum += float(result.ious.sum())
        self.frames += 1
        return result

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        wanted = self.true_positives + self.false_negatives
        return self.true_positives / wanted if wanted else 1.0

    @property
    def f1(self) -> float:
        """1.0 when neither side has any box (nothing to disagree about)."""
        denominator = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / denominator if denominator else 1.0

    @property
    def mean_iou(self) -> float:
        """Mean IoU of matched pairs (1.0 when nothing was matched because there was nothing to match)."""
        if self.true_positives:
            return self._iou_sum / self.true_positives
        return 1.0 if self.false_positives == self.false_negatives == 0 else 0.0

    def as_dict(self) -> dict:
        return {"f1": self.f1, "precision": self.precision, "recall": self.recall, "mean_iou": self.mean_iou,
                "true_positives": self.true_positives, "false_positives": self.false_positives,
                "false_negatives": self.false_negatives, "reference_boxes": self.true_positives + self.false_negatives,
                "frames": self.frames, "iou_threshold": self.iou_threshold, "class_aware": self.class_aware}


@dataclass
class MarginBoxAgreement(BoxAgreement):
    """BoxAgreement counted by `match_with_margin`: feed both sides decoded at conf_threshold - margin."""

    conf_threshold: float = 0.25
    margin: float = SCORE_MARGIN

    def _match(self, candidate: Detections, reference: Detections) -> Match:
        return match_with_margin(candidate, reference, self.conf_threshold, self.margin, self.iou_threshold,
                                 self.class_aware)

    def as_dict(self) -> dict:
        return super().as_dict() | {"conf_threshold": self.conf_threshold, "margin": self.margin}


def flicker(boxes: list[Detections], iou_threshold: float = 0.5, class_aware: bool = True) -> BoxAgreement:
    """Each frame's boxes against the previous frame's (its F1 is how steady the boxes are; flicker = 1 - F1)."""
    agreement = BoxAgreement(iou_threshold=iou_threshold, class_aware=class_aware)
    for previous, current in zip(boxes, boxes[1:]):
        agreement.add(current, previous)
    return agreement


__all__ = ["SCORE_MARGIN", "BoxAgreement", "Detections", "MarginBoxAgreement", "Match", "box_iou", "cxcywh_to_xyxy",
           "decode_with_margin", "decode_yolo", "flicker", "match", "match_with_margin", "nms"]
