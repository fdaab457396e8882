"""NFCovering per hierarchy level (HSG) and the region F-score at a number of regions.

NFCovering, normalized foreground covering (Ke et al., CVPR 2022, eq. 10).
Segmentation covering (Arbelaez et al., PAMI 2011) of a ground truth S by a
segmentation S' weighs every ground-truth region R by its area,
`(1/N) sum_R |R| max_{R'} IoU(R, R')`, so large background regions dominate.
HSG normalises it: every foreground ground-truth region counts the same,

  NFCovering(S' -> S) = (1 / |S_fg|) sum_{R in S_fg} max_{R' in S'} IoU(R, R'),

with S_fg the ground-truth regions other than the background, and
IoU(R, R') = |R n R'| / |R u R'|. It is evaluated for every (ground-truth
level, predicted level) pair of two hierarchies -- e.g. Pascal-Part objects
and parts against the predicted levels G1, G2 -- and averaged over images
(images without a foreground region are skipped: their value is undefined).
Identical segmentations score 1 and relabelling either leaves it unchanged.
Choice: the mean is over images (each image counts the same), the reading
of HSG's per-image protocol; `result()` also returns the image count.
Void: pixels whose ground-truth label is `ignore` (255, the VOC void band
around objects) are removed from both maps before the regions are compared,
so the band is neither a region to cover nor part of a predicted region (kept,
it is scored as a foreground region: a prediction that is perfect on the
labelled pixels loses the band's IoU). The formula is HSG eq. 10 as printed.

Region F-score (HSG/CAST tables at a fixed number of regions): the
precision-recall for regions of Martin (PhD thesis, 2003) as benchmarked by
Pont-Tuset & Marques (CVPR 2013), computed on pairs of pixels from the
overlaps (intersection matrix) of the two segmentations: with n_ij the
overlap of predicted region i and true region j, a_i and b_j the areas,

  N11 = sum_ij n_ij (n_ij - 1)/2         (pairs together in both)
  precision = N11 / sum_i a_i (a_i - 1)/2  (pairs together in the prediction)
  recall    = N11 / sum_j b_j (b_j - 1)/2  (pairs together in the truth)

Choice: the papers' tables do not restate the formula; this is the
standard region F-measure of the segmentation-evaluation literature, chosen
because it is defined for any number of regions and symmetric in its two
arguments' roles up to precision <-> recall. Precision (recall) is 1 when
the prediction (truth) puts no two pixels together: no wrong pair. Dataset
scores average precision and recall over images and report their harmonic
mean (as Pont-Tuset & Marques' benchmark), and the mean per-image F.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np

# The void label of VOC-style class maps (the band around objects).
VOID = 255


def _check_pair(prediction, truth, caller: str) -> tuple[np.ndarray, np.ndarray]:
  prediction = np.asarray(prediction)
  truth = np.asarray(truth)
  if prediction.ndim != 2 or prediction.shape != truth.shape:
    raise ValueError(f"{caller}: prediction {prediction.shape} and truth {truth.shape} "
                     f"must be label maps of one (H, W) shape")
  for name, array in (("prediction", prediction), ("truth", truth)):
    if not np.issubdtype(array.dtype, np.integer):
      raise ValueError(f"{caller}: {name} must be an integer label map, got {array.dtype}")
  return prediction, truth


def intersection_matrix(first, second) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Overlap counts `n[i, j]` of the regions of two label maps of equal shape.

  Returns (n, ids of `first`, ids of `second`), ids sorted.
  """
  first_ids, first_index = np.unique(np.ravel(first), return_inverse=True)
  second_ids, second_index = np.unique(np.ravel(second), return_inverse=True)
  counts = np.bincount(first_index * len(second_ids) + second_index,
                       minlength=len(first_ids) * len(second_ids))
  return counts.reshape(len(first_ids), len(second_ids)), first_ids, second_ids


def nf_covering(prediction, truth, *, background: int | None = 0,
                ignore: int | None = None) -> float:
  """NFCovering of the ground truth `truth` by `prediction` (HSG eq. 10).

  Args:
    prediction: (H, W) integer label map (any ids).
    truth: (H, W) integer label map.
    background: truth label left out of the average (None: keep all regions).
    ignore: truth label whose pixels are not evaluated at all (255: VOC's void band);
      None keeps every pixel.

  Returns:
    The mean over foreground truth regions of the best IoU with a predicted
    region; nan when the truth has no foreground region.
  """
  prediction, truth = _check_pair(prediction, truth, "nf_covering")
  if ignore is not None:
    keep = truth != ignore
    prediction, truth = prediction[keep], truth[keep]
  overlap, truth_ids, _ = intersection_matrix(truth, prediction)
  truth_area = overlap.sum(axis=1, keepdims=True)
  predicted_area = overlap.sum(axis=0, keepdims=True)
  iou = overlap / (truth_area + predicted_area - overlap)
  foreground = truth_ids != background if background is not None else np.ones_like(
      truth_ids, bool)
  if not foreground.any():
    return float("nan")
  return float(iou[foreground].max(axis=1).mean())


class NFCoveringAccumulator:
  """NFCovering for every (ground-truth level, predicted level) pair over images.

  `add(predicted_levels, truth_levels)` takes the label maps of the predicted
  hierarchy's levels (e.g. from `levels_from_hierarchy`) and of the ground
  truth's levels; `result()` averages over images.
  """

  def __init__(self, *, background: int | None = 0, ignore: int | None = None):
    self.background = background
    self.ignore = ignore
    self.values: list[np.ndarray] = []

  def add(self, predicted_levels: Sequence, truth_levels: Sequence) -> np.ndarray:
    """Adds one image; returns its (truth levels, predicted levels) matrix."""
    if not predicted_levels or not truth_levels:
      raise ValueError("NFCoveringAccumulator.add: needs at least one predicted and "
                       "one ground-truth level")
    values = np.array([[nf_covering(p, t, background=self.background, ignore=self.ignore)
                        for p in predicted_levels] for t in truth_levels])
    if self.values and values.shape != self.values[0].shape:
      raise ValueError(f"NFCoveringAccumulator.add: got {values.shape[0]} truth x "
                       f"{values.shape[1]} predicted levels, earlier images had "
                       f"{self.values[0].shape}")
    self.values.append(values)
    return values

  def add_hierarchy(self, h, v, truth_levels: Sequence, *,
                    num_regions: Sequence[int] | None = None,
                    thresholds: Sequence[float] | None = None) -> np.ndarray:
    """Adds one image whose prediction is an ultrametric (h, v), cut into levels
    by number of regions or by thresholds (see `levels_from_hierarchy`)."""
    return self.add(levels_from_hierarchy(h, v, num_regions=num_regions,
                                          thresholds=thresholds), truth_levels)

  def merge(self, other: "NFCoveringAccumulator") -> None:
    self.values.extend(other.values)

  def result(self) -> dict:
    """`per_level[t, p]`: mean NFCovering of truth level t by predicted level p;
    `best[t]`: mean over images of the best predicted level for truth level t."""
    if not self.values:
      raise ValueError("NFCoveringAccumulator.result: no image was added")
    stack = np.stack(self.values)  # (images, truth levels, predicted levels)
    # An image without foreground in a truth level is nan for that level
    # (all its predicted levels): it is left out of that level's mean.
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)
      per_level = np.nanmean(stack, axis=0)
      best = np.nanmean(np.nanmax(stack, axis=2), axis=0)
    valid = ~np.isnan(stack)
    return {"per_level": per_level, "best": best, "num_images": len(self.values),
            "num_images_with_foreground": valid.any(axis=2).sum(axis=0)}


def _pairs(counts: np.ndarray) -> float:
  counts = counts.astype(np.float64)
  return float(np.sum(counts * (counts - 1) / 2))


def region_f_score(prediction, truth) -> dict[str, float]:
  """Region precision, recall and F (pairs of pixels) of one image."""
  prediction, truth = _check_pair(prediction, truth, "region_f_score")
  overlap, _, _ = intersection_matrix(prediction, truth)
  together_both = _pairs(overlap)
  together_predicted = _pairs(overlap.sum(axis=1))
  together_truth = _pairs(overlap.sum(axis=0))
  precision = together_both / together_predicted if together_predicted else 1.0
  recall = together_both / together_truth if together_truth else 1.0
  f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return {"precision": precision, "recall": recall, "f": f}


class RegionFScoreAccumulator:
  """Region F-score over images, one predicted segmentation per image.

  For the HSG/CAST tables, pass the cut of the predicted hierarchy with the
  table's number of regions (see `levels_from_hierarchy`).
  """

  def __init__(self, *, num_regions: int | None = None):
    """`num_regions`: the table's number of regions, used by `add_hierarchy`."""
    self.num_regions = num_regions
    self.scores: list[dict[str, float]] = []

  def add(self, prediction, truth) -> dict[str, float]:
    scores = region_f_score(prediction, truth)
    self.scores.append(scores)
    return scores

  def add_hierarchy(self, h, v, truth) -> dict[str, float]:
    """Adds the cut of the ultrametric (h, v) with at most `num_regions` regions."""
    if self.num_regions is None:
      raise ValueError("RegionFScoreAccumulator.add_hierarchy: construct the accumulator "
                       "with num_regions=")
    (cut,) = levels_from_hierarchy(h, v, num_regions=[self.num_regions])
    return self.add(cut, truth)

  def merge(self, other: "RegionFScoreAccumulator") -> None:
    self.scores.extend(other.scores)

  def result(self) -> dict[str, float]:
    if not self.scores:
      raise ValueError("RegionFScoreAccumulator.result: no image was added")
    precision = float(np.mean([s["precision"] for s in self.scores]))
    recall = float(np.mean([s["recall"] for s in self.scores]))
    f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f": f,
            "mean_f": float(np.mean([s["f"] for s in self.scores])),
            "num_images": len(self.scores)}


def levels_from_hierarchy(h, v, *, num_regions: Sequence[int] | None = None,
                          thresholds: Sequence[float] | None = None) -> list[np.ndarray]:
  """Label maps of the cuts of an ultrametric (h, v), coarse or fine as asked.

  Exactly one of `num_regions` (cuts by number of regions, as the HSG/CAST
  tables) or `thresholds` (horizontal cuts) must be given; the cuts come
  from `jhseg.hierarchy` (the only module that calls Higra).
  """
  if (num_regions is None) == (thresholds is None):
    raise ValueError("levels_from_hierarchy: give exactly one of num_regions or thresholds")
  from jhseg import hierarchy  # pylint: disable=g-import-not-at-top
  h = np.asarray(h)
  v = np.asarray(v)
  if num_regions is not None:
    return [np.asarray(hierarchy.cut_with_num_regions(h, v, int(k))) for k in num_regions]
  return [np.asarray(hierarchy.cut_at_threshold(h, v, float(t))) for t in thresholds]
