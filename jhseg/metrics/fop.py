"""Objects-and-parts F-measure, Fop (Pont-Tuset & Marques, CVPR 2013), at ODS/OIS.

Fop scores a segmentation S against ground truths G_1..G_m region by
region. For a predicted region P and a true region G, with relative overlaps
p = |P n G| / |P| (precision) and r = |P n G| / |G| (recall):

- p >= gamma_o and r >= gamma_o: P and G are the same *object* (one-to-one);
- p >= gamma_o and gamma_p <= r < gamma_o: P is a *part* of G;
- r >= gamma_o and gamma_p <= p < gamma_o: G is a *part* of P.

A region of neither kind may still be partly detected: a true region split
into several predicted regions (each with p >= gamma_o, r < gamma_o) is
credited the sum of their r (degree of fragmentation), and symmetrically a
predicted region spread over several true ones the sum of their p. Regions
in the smallest 1% of the image area (by cumulative area, largest first)
are not counted as candidates, so specks do not weigh like objects. Then

  precision = (objects_S + beta parts_S + fragmentation_S / m) / candidates_S
  recall    = (objects_G + beta parts_G + fragmentation_G)     / candidates_G
  Fop       = 2 precision recall / (precision + recall)

with every ground truth's regions pooled in the G counts, and the defaults
of the paper: gamma_o = 0.9, gamma_p = 0.25, beta = 0.1.

Hierarchies are scored over a threshold sweep (the cuts at each t). As DEL
(Liu et al., IJCAI 2018, Sec. 4.1) reports, following the authors' benchmark
(SEISM, `gather_measure.m` with `general_ods` / `general_ois`): ODS takes, per
threshold, the mean precision and the mean recall over images and their
harmonic mean F = 2PR / (P + R), and keeps the best threshold; OIS takes each
image's best threshold (by its own Fop), then the F of the mean precision and
mean recall there. AP, which SEISM does not report for Fop, is the BSDS
boundary benchmark's rule (`boundary.average_precision`: precision linearly
interpolated at recall 0:0.01:1) applied to the per-threshold mean curve.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jhseg.metrics import boundary
from jhseg.metrics import level_recovery

GAMMA_OBJECT = 0.9
GAMMA_PART = 0.25
BETA = 0.1
AREA_PERCENTILE = 0.99


def _dense_index(labels: np.ndarray) -> np.ndarray:
  """Labels renumbered 0..n-1 in increasing id order (flat); O(N) for small ids."""
  flat = labels.ravel()
  low, high = int(flat.min()), int(flat.max())
  if high - low > 4 * flat.size:  # sparse ids: sorting is cheaper than a lookup table
    return np.unique(flat, return_inverse=True)[1].ravel()
  present = np.zeros(high - low + 1, bool)
  present[flat - low] = True
  return (np.cumsum(present) - 1)[flat - low]


def _intersections(prediction: np.ndarray, truth: np.ndarray) -> np.ndarray:
  predicted_index = _dense_index(prediction)
  truth_index = _dense_index(truth)
  num_predicted, num_truth = predicted_index.max() + 1, truth_index.max() + 1
  counts = np.bincount(predicted_index * num_truth + truth_index,
                       minlength=num_predicted * num_truth)
  return counts.reshape(num_predicted, num_truth).astype(np.float64)


def _candidates(areas: np.ndarray, image_area: float, percentile: float) -> np.ndarray:
  """Regions taken largest first until they cover `percentile` of the image."""
  # Largest first; among equal areas the later region first (the reference
  # implementation's order), which only matters at the percentile boundary.
  order = np.lexsort((-np.arange(len(areas)), -areas))
  covered_before = np.cumsum(areas[order]) - areas[order]
  candidate = np.zeros(len(areas), bool)
  candidate[order] = covered_before / image_area < percentile
  return candidate


def objects_and_parts(prediction, truths: Sequence, *, gamma_object: float = GAMMA_OBJECT,
                      gamma_part: float = GAMMA_PART, beta: float = BETA,
                      area_percentile: float = AREA_PERCENTILE) -> dict[str, float]:
  """Fop precision, recall and F of one segmentation against its ground truths.

  Args:
    prediction: (H, W) integer label map.
    truths: one or more (H, W) integer label maps (e.g. BSDS annotators).
  """
  prediction = np.asarray(prediction)
  if not np.issubdtype(prediction.dtype, np.integer):
    raise ValueError(f"objects_and_parts: prediction must be an integer label map, got "
                     f"{prediction.dtype}")
  if isinstance(truths, np.ndarray) and truths.ndim == 2:
    truths = [truths]
  truths = [np.asarray(t) for t in truths]
  if not truths:
    raise ValueError("objects_and_parts: needs at least one ground truth")
  for k, truth in enumerate(truths):
    if not np.issubdtype(truth.dtype, np.integer):
      raise ValueError(f"objects_and_parts: truths[{k}] must be an integer label map, "
                       f"got {truth.dtype}")
    if truth.shape != prediction.shape or prediction.ndim != 2:
      raise ValueError(f"objects_and_parts: truths[{k}] has shape {truth.shape}, "
                       f"prediction {prediction.shape}; expected one (H, W) shape")
  if not 0 < gamma_part <= gamma_object <= 1:
    raise ValueError(f"objects_and_parts: need 0 < gamma_part <= gamma_object <= 1, got "
                     f"{gamma_part}, {gamma_object}")

  image_area = float(prediction.size)
  predicted_object = predicted_part = None
  predicted_fragmentation = None
  truth_objects = truth_parts = truth_fragmentation = truth_candidates = 0.0
  for truth in truths:
    overlap = _intersections(prediction, truth)
    predicted_area = overlap.sum(axis=1)
    truth_area = overlap.sum(axis=0)
    precision = overlap / predicted_area[:, None]
    recall = overlap / truth_area[None, :]
    if predicted_object is None:
      predicted_candidate = _candidates(predicted_area, image_area, area_percentile)
      predicted_object = np.zeros(len(predicted_area), bool)
      predicted_part = np.zeros(len(predicted_area), bool)
      predicted_fragmentation = np.zeros(len(predicted_area))
    truth_candidate = _candidates(truth_area, image_area, area_percentile)
    both_candidates = predicted_candidate[:, None] & truth_candidate[None, :]
    high_p, high_r = precision >= gamma_object, recall >= gamma_object
    is_object = both_candidates & high_p & high_r
    predicted_is_part = both_candidates & high_p & ~high_r & (recall >= gamma_part)
    truth_is_part = both_candidates & high_r & ~high_p & (precision >= gamma_part)
    predicted_object |= is_object.any(axis=1)
    predicted_part |= predicted_is_part.any(axis=1)
    truth_object = is_object.any(axis=0)
    truth_part = truth_is_part.any(axis=0) & ~truth_object
    # Fragmentation counts every overlap (candidate or not) into the other side.
    truth_fragments = np.where(high_p & ~high_r, recall, 0.0).sum(axis=0)
    predicted_fragmentation += np.where(high_r & ~high_p, precision, 0.0).sum(axis=1)
    unclassified = truth_candidate & ~truth_object & ~truth_part
    truth_objects += truth_object.sum()
    truth_parts += truth_part.sum()
    truth_fragmentation += truth_fragments[unclassified].sum()
    truth_candidates += truth_candidate.sum()

  predicted_part &= ~predicted_object
  unclassified = predicted_candidate & ~predicted_object & ~predicted_part
  precision_value = (predicted_object.sum() + beta * predicted_part.sum()
                     + predicted_fragmentation[unclassified].sum() / len(truths)
                     ) / predicted_candidate.sum()
  recall_value = (truth_objects + beta * truth_parts + truth_fragmentation) / truth_candidates
  denominator = precision_value + recall_value
  f = 2 * precision_value * recall_value / denominator if denominator else 0.0
  return {"precision": float(precision_value), "recall": float(recall_value), "f": float(f)}


def _f(precision, recall):
  precision, recall = np.asarray(precision), np.asarray(recall)
  denominator = precision + recall
  return np.where(denominator > 0, 2 * precision * recall / np.where(denominator > 0,
                                                                     denominator, 1), 0.0)


class FopAccumulator:
  """Fop over images and a sweep of segmentations per image; ODS and OIS.

  Per image, either `add_hierarchy(h, v, truths)` (cuts the ultrametric at
  every threshold: boundaries where weight > t) or `add_segmentations(
  segmentations, truths)` (one label map per sweep position, e.g. a BSDS
  `segs` cell). Every image must give the same number of sweep positions.
  """

  def __init__(self, *, thresholds: Sequence[float] | np.ndarray | None = None,
               gamma_object: float = GAMMA_OBJECT, gamma_part: float = GAMMA_PART,
               beta: float = BETA):
    self.thresholds = (level_recovery.default_thresholds() if thresholds is None
                       else np.asarray(thresholds, np.float64).ravel())
    self.options = {"gamma_object": gamma_object, "gamma_part": gamma_part, "beta": beta}
    self.precision: list[np.ndarray] = []
    self.recall: list[np.ndarray] = []

  def add_segmentations(self, segmentations: Sequence, truths: Sequence) -> np.ndarray:
    """Adds one image's sweep; returns its (positions, 3) precision, recall, F.

    A segmentation given twice as the same array object (e.g. the identical cuts of
    `region.segmentations_from_ucm2`) is scored once.
    """
    by_identity: dict[int, dict[str, float]] = {}
    scores = []
    for segmentation in segmentations:
      if id(segmentation) not in by_identity:
        by_identity[id(segmentation)] = objects_and_parts(segmentation, truths, **self.options)
      scores.append(by_identity[id(segmentation)])
    if not scores:
      raise ValueError("FopAccumulator.add_segmentations: needs at least one segmentation")
    return self._append(scores)

  def add_hierarchy(self, h, v, truths: Sequence) -> np.ndarray:
    """Adds one image given as ultrametric edge weights h (H, W-1), v (H-1, W)."""
    h, v = np.asarray(h), np.asarray(v)
    if h.ndim != 2 or v.ndim != 2 or v.shape != (h.shape[0] - 1, h.shape[1] + 1):
      raise ValueError(f"FopAccumulator.add_hierarchy: h {h.shape} and v {v.shape} must "
                       f"be (H, W-1) and (H-1, W)")
    # The cut at t only depends on which weights exceed t: thresholds between
    # the same two consecutive weight values share one cut (and one score).
    levels = level_recovery.threshold_classes(h, v, self.thresholds)
    scores = {}
    for level, threshold in zip(levels, self.thresholds):
      if level not in scores:
        cut = level_recovery.contour_regions(h > threshold, v > threshold)
        scores[level] = objects_and_parts(cut, truths, **self.options)
    return self._append([scores[level] for level in levels])

  def _append(self, scores: list[dict[str, float]]) -> np.ndarray:
    if self.precision and len(scores) != len(self.precision[0]):
      raise ValueError(f"FopAccumulator: got {len(scores)} segmentations for this image, "
                       f"earlier images had {len(self.precision[0])}")
    self.precision.append(np.array([s["precision"] for s in scores]))
    self.recall.append(np.array([s["recall"] for s in scores]))
    return np.array([[s["precision"], s["recall"], s["f"]] for s in scores])

  def merge(self, other: "FopAccumulator") -> None:
    self.precision.extend(other.precision)
    self.recall.extend(other.recall)

  def result(self) -> dict:
    """ODS (best threshold for the dataset) and OIS (best per image) Fop."""
    if not self.precision:
      raise ValueError("FopAccumulator.result: no image was added")
    precision = np.stack(self.precision)  # (images, positions)
    recall = np.stack(self.recall)
    mean_precision, mean_recall = precision.mean(axis=0), recall.mean(axis=0)
    f_per_position = _f(mean_precision, mean_recall)
    ods = int(np.argmax(f_per_position))
    best = np.argmax(_f(precision, recall), axis=1)
    rows = np.arange(len(best))
    ois_precision, ois_recall = precision[rows, best].mean(), recall[rows, best].mean()
    sweep = (self.thresholds if len(self.thresholds) == precision.shape[1]
             else np.arange(precision.shape[1]))
    return {
        "ods": {"f": float(f_per_position[ods]), "precision": float(mean_precision[ods]),
                "recall": float(mean_recall[ods]), "threshold": float(sweep[ods])},
        "ois": {"f": float(_f(ois_precision, ois_recall)),
                "precision": float(ois_precision), "recall": float(ois_recall)},
        "ap": boundary.average_precision(mean_recall, mean_precision),
        "per_threshold": {"threshold": sweep, "precision": mean_precision,
                          "recall": mean_recall, "f": f_per_position},
        # Each image at its own best sweep position: threshold, precision, recall, F.
        "per_image": np.stack([sweep[best], precision[rows, best], recall[rows, best],
                               _f(precision[rows, best], recall[rows, best])], axis=1),
        "num_images": len(best),
    }
