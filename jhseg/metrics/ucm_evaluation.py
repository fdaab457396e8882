"""Host-side evaluation of predicted UCMs against a hierarchical target (Lapertot et al.).

The three metrics of sec. 4 of "Supervised Learning of Hierarchical Image
Segmentation" (CIARP 2023) in one pass per image, for the ultrametric task's
evaluation and for `python -m jhseg.evaluate` on hierarchical ground truth:
LRF per level and FDF (eqs. 3-4, `jhseg.metrics.level_recovery`) and the BSDS
boundary PR curves with ODS / OIS / AP (`jhseg.metrics.boundary`).

Per image and per threshold t of the sweep (`level_recovery.sweep_thresholds`):

1. The prediction's contours C(t) = {edges with weight >= t, weight > 0}
   (`level_recovery.contours_at`), with the object-neighbourhood protocol
   when instances are given: clipped to the merged object masks dilated by
   20 px, non-closed contours dropped. Thresholds that select the same
   contours share one cut: each distinct cut is built, drawn and matched
   once, for all three metrics.
2. Machine boundaries: C(t) drawn at image resolution as the official
   `seg2bdry` (a pixel is on when an edge at its lower-right corner is a
   contour; `pixel_levels`), not thinned by default (see below).
3. Ground truth: the target's contours of every level > 0 (its finest
   segmentation, as the paper's PR curves) under the same protocol, drawn
   the same way; each boundary pixel carries the highest level
   of its corner's edges (the BSDS reading of a UCM, `ucm2[2::2, 2::2]`), so
   a pixel where a part boundary meets an object boundary is an object pixel.
4. One BSDS correspondence (`jhseg.hierarchy.matching`, tolerance
   `max_distance` = 0.0075 of the image diagonal) between the two maps gives
   the PR counts (cntR, sumR, cntP, sumP) and, from the same matched pixels,
     LRF(lambda, t) = matched ground-truth pixels of level lambda / all of level lambda,
     FDF(t)         = unmatched machine pixels / machine pixels = 1 - P(t).
   With `level_matching="exact"` LRF/FDF count edges matched exactly instead
   (`level_recovery.level_recovery_counts`); the PR curves always use BSDS.

Per class (the paper's Fig. 6 and Fig. 8): for every instance, the image is
cropped to the instance's box enlarged by the neighbourhood radius; in the
crop, the target keeps only the boundaries of the instance's class (an edge
is kept when one of its pixels belongs to an object of that class: object,
part, and class-to-other-object boundaries), the neighbourhood is the
class's objects dilated by the radius, and the three metrics are computed as
for whole images. Per class: pooled LRF/FDF and ODS / OIS / AP over its crops.

Thinning: the BSDS benchmark thins the machine maps (made for thick soft
boundary maps) and its ground-truth boundaries are thinned `seg2bdry` maps;
`thin=True` does both. Drawn contours of a partition are one pixel wide
already (but for corner blocks), and thinning each cut on its own moves
junction pixels: a thinned map of the object contours alone differs from the
object pixels of the thinned map of all contours, so the target fed in as its
own prediction would score LRF(objects) 0.97 and FDF 0.06 (means over the
sweep) on the 32-px synthetic scenes, and LRF(objects) 0.993, LRF(parts)
0.035 at t = 0.6 on Pascal-Part annotations. Unthinned (the default), the
object pixels of both maps coincide and the target scores exactly 1 / 0.

Faithfulness (deliberate deviations or readings where the paper is silent):

- With BSDS matching, LRF and FDF count image-resolution boundary pixels (the
  BSDS representation the correspondence works on), not the 4-adjacency
  edges eqs. 3-4 are written with; `level_matching="exact"` counts edges.
- Boundary maps are not thinned by default (see Thinning above); the PR
  curves of hierarchical ground truth therefore differ from the official
  benchmark's at corner pixels (`thin=True` reproduces it).
- Matching tolerance in crops: 0.0075 of the *whole image's* diagonal, so a
  crop is matched with the same slack in pixels as its image (relative to
  a small crop's diagonal a one-pixel shift would no longer match).
- In a class crop the neighbourhood is the class's objects only: the
  target has lost the other classes' boundaries, so only the class's
  surroundings are scored; predicted contours of another object within
  20 px of the class's objects count as false discoveries.
- The crop margin is the neighbourhood radius (20 px; "a small margin"),
  so the neighbourhood of the instance fits the crop.
- OIS in a class table is over the class's crops (one "image" per instance).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from jhseg import grid
from jhseg.hierarchy import matching
from jhseg.metrics import boundary
from jhseg.metrics import level_recovery as lr
from jhseg.metrics import region

LEVEL_MATCHINGS = ("bsds", "exact")


def pixel_levels(h, v) -> np.ndarray:
  """(H, W) highest weight of the edges meeting at each pixel's lower-right corner.

  The official `seg2bdry(seg, 'imageSize')` rule with weights instead of
  booleans (the last row reads only its horizontal edges, the last column
  only its vertical ones, the bottom-right pixel is 0): for the contours of
  a partition, `pixel_levels(h, v) > 0` is the BSDS boundary map of that
  partition, and for an ultrametric it is `ucm2[2::2, 2::2]`.
  """
  h = np.asarray(h, np.float64)
  v = np.asarray(v, np.float64)
  height, width = h.shape[0], v.shape[1]
  right = np.zeros((height, width))
  right[:, :-1] = h
  below = np.zeros((height, width))
  below[:-1, :] = v
  out = np.zeros((height, width))
  out[:-1, :-1] = np.maximum(np.maximum(right[:-1, :-1], right[1:, :-1]),
                             np.maximum(below[:-1, :-1], below[:-1, 1:]))
  out[-1, :-1] = right[-1, :-1]
  out[:-1, -1] = below[:-1, -1]
  return out


def target_boundaries(truth_h, truth_v, neighbourhood=None, *,
                      thin: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(Thinned) ground-truth boundary map (H, W) and each of its pixels' level (0 elsewhere)."""
  truth_h = np.asarray(truth_h, np.float64)
  truth_v = np.asarray(truth_v, np.float64)
  kept_h, kept_v = lr.contours_in_neighbourhood(truth_h > 0, truth_v > 0, neighbourhood)
  levels = pixel_levels(np.where(kept_h, truth_h, 0.0), np.where(kept_v, truth_v, 0.0))
  thinned = boundary.thin(levels > 0) if thin else levels > 0
  return thinned, np.where(thinned, levels, 0.0)


def machine_boundaries(pred_h, pred_v, threshold: float, neighbourhood=None, *,
                       thin: bool = False) -> np.ndarray:
  """(Thinned) machine boundary map (H, W) of the protocol's contours C(t)."""
  kept_h, kept_v = lr.contours_in_neighbourhood(*lr.contours_at(pred_h, pred_v, threshold),
                                                neighbourhood)
  drawn = pixel_levels(kept_h, kept_v) > 0
  return boundary.thin(drawn) if thin else drawn


def image_counts(pred_h, pred_v, truth_h, truth_v, *, thresholds, levels=lr.DEFAULT_LEVELS,
                 neighbourhood=None, max_distance: float = matching.DEFAULT_MAX_DISTANCE,
                 diagonal: float | None = None, matcher: str = matching.DEFAULT_MATCHER,
                 level_matching: str = "bsds", thin: bool = False
                 ) -> tuple[boundary.BoundaryCounts, lr.LevelRecoveryCounts]:
  """PR counts and LRF/FDF counts of one image (or crop), see the module docstring.

  Args:
    pred_h, pred_v: predicted edge weights, (H, W-1) and (H-1, W).
    truth_h, truth_v: ground-truth ultrametric edge weights (levels), same shapes.
    thresholds: the sweep; levels: the ground-truth levels reported.
    neighbourhood: optional (H, W) bool mask: the object-neighbourhood protocol.
    max_distance: BSDS matching tolerance as a fraction of `diagonal`.
    diagonal: pixels; None: this map's own diagonal (a crop passes its image's).
    matcher: a name of `jhseg.hierarchy.matching.MATCHERS`.
    level_matching: "bsds" (LRF/FDF from the PR matching) or "exact" (edges).
    thin: thin both boundary maps, as the BSDS benchmark (see the module docstring).
  """
  if level_matching not in LEVEL_MATCHINGS:
    raise ValueError(f"unknown level_matching {level_matching!r}; valid: "
                     f"{', '.join(LEVEL_MATCHINGS)}")
  truth_h, truth_v = lr.check_edges(truth_h, truth_v, "ground-truth")
  shape = (truth_h.shape[0], truth_v.shape[1])
  pred_h, pred_v = lr.check_edges(pred_h, pred_v, "predicted", shape)
  if neighbourhood is not None and np.shape(neighbourhood) != shape:
    raise ValueError(f"image_counts: neighbourhood has shape {np.shape(neighbourhood)}, "
                     f"expected {shape}")
  thresholds = np.asarray(thresholds, np.float64).ravel()
  levels = np.asarray(levels, np.float64).ravel()
  relative = max_distance
  if diagonal is not None:
    relative = max_distance * float(diagonal) / float(np.hypot(*shape))

  truth_map, truth_levels = target_boundaries(truth_h, truth_v, neighbourhood, thin=thin)
  level_pixels = [np.isclose(truth_levels, level, atol=1e-6) & truth_map for level in levels]
  rows = np.zeros((len(thresholds), 4), np.int64)  # cntR, sumR, cntP, sumP
  recovered = np.zeros((len(levels), len(thresholds)), np.int64)
  classes = lr.contour_classes(pred_h, pred_v, thresholds)
  done: dict[int, int] = {}  # contour class -> first column computed for it
  for k, threshold in enumerate(thresholds):
    if classes[k] in done:  # the same cut as an earlier threshold
      rows[k], recovered[:, k] = rows[done[classes[k]]], recovered[:, done[classes[k]]]
      continue
    done[classes[k]] = k
    machine = machine_boundaries(pred_h, pred_v, threshold, neighbourhood, thin=thin)
    matched_machine, matched_truth = matching.match_boundary_pixels(
        machine, truth_map, max_distance=relative, matcher=matcher)
    rows[k] = (matched_truth.sum(), truth_map.sum(), matched_machine.sum(), machine.sum())
    recovered[:, k] = [(matched_truth & pixels).sum() for pixels in level_pixels]
  pr = boundary.BoundaryCounts(thresholds, *rows.T)
  if level_matching == "exact":
    counts = lr.level_recovery_counts(pred_h, pred_v, truth_h, truth_v, thresholds=thresholds,
                                      levels=levels, neighbourhood=neighbourhood)
  else:
    counts = lr.LevelRecoveryCounts(
        truth=np.array([pixels.sum() for pixels in level_pixels], np.int64),
        recovered=recovered, predicted=pr.sum_p.copy(), false=pr.sum_p - pr.cnt_p)
  return pr, counts


def class_target(truth_h, truth_v, class_mask) -> tuple[np.ndarray, np.ndarray]:
  """Target weights without the boundaries of other classes (Fig. 8's per-class protocol).

  An edge is kept when at least one of its pixels is in `class_mask` (H, W):
  the class's object and part boundaries and its frontiers with other
  objects stay; edges among other objects and the background become 0.
  """
  mask = np.asarray(class_mask, bool)
  touch_h = mask[:, :-1] | mask[:, 1:]
  touch_v = mask[:-1, :] | mask[1:, :]
  return np.where(touch_h, truth_h, 0.0), np.where(touch_v, truth_v, 0.0)


def crop_padding(size, target_ucm, pred_h, pred_v, instances=None):
  """The valid (H, W) = `size` part of a padded example, as edge weights.

  Args:
    size: (H, W) of the image before padding.
    target_ucm: padded interpixel target (>= (2H-1, 2W-1)).
    pred_h, pred_v: padded predicted edge weights.
    instances: optional padded (>= (H, W)) instance map.

  Returns:
    (pred_h, pred_v, truth_h, truth_v, instances) cropped to the image.
  """
  height, width = (int(s) for s in size)
  truth = np.asarray(target_ucm)[:2 * height - 1, :2 * width - 1]
  cropped = (np.asarray(pred_h)[:height, :width - 1], np.asarray(pred_v)[:height - 1, :width],
             truth[0::2, 1::2], truth[1::2, 0::2])
  return cropped + (None if instances is None else np.asarray(instances)[:height, :width],)


@dataclasses.dataclass
class _ClassTotals:
  counts: lr.LevelRecoveryCounts
  crops: list  # BoundaryCounts of each crop


class UcmEvaluation:
  """LRF/FDF curves and the boundary benchmark over a dataset, whole images and per class.

  `add` scores one image (safe in worker processes; `merge` the accumulators,
  which pickle); `result()` pools them.
  """

  def __init__(self, *, levels: Sequence[float] = lr.DEFAULT_LEVELS,
               thresholds: Sequence[float] | np.ndarray | None = None,
               radius: float = lr.DEFAULT_RADIUS,
               max_distance: float = matching.DEFAULT_MAX_DISTANCE,
               matcher: str = matching.DEFAULT_MATCHER, level_matching: str = "bsds",
               thin: bool = False, background: int = 0):
    if level_matching not in LEVEL_MATCHINGS:
      raise ValueError(f"UcmEvaluation: unknown level_matching {level_matching!r}; valid: "
                       f"{', '.join(LEVEL_MATCHINGS)}")
    if matcher not in matching.MATCHERS:
      raise ValueError(f"UcmEvaluation: unknown matcher {matcher!r}; valid: "
                       f"{', '.join(matching.MATCHERS)}")
    self.levels = tuple(float(level) for level in levels)
    self.thresholds = (lr.sweep_thresholds() if thresholds is None
                       else np.asarray(thresholds, np.float64).ravel())
    self.options = dict(max_distance=max_distance, matcher=matcher,
                        level_matching=level_matching, thin=thin)
    self.radius = radius
    self.background = background
    self.total = lr.LevelRecoveryCounts.zeros(len(self.levels), len(self.thresholds))
    self.boundary: list[boundary.BoundaryCounts] = []
    self.per_class: dict[int, _ClassTotals] = {}
    self.num_images = 0

  def _counts(self, pred_h, pred_v, truth_h, truth_v, neighbourhood, diagonal=None):
    return image_counts(pred_h, pred_v, truth_h, truth_v, thresholds=self.thresholds,
                        levels=self.levels, neighbourhood=neighbourhood, diagonal=diagonal,
                        **self.options)

  def add(self, pred_h, pred_v, truth_h, truth_v, *, instances=None,
          instance_classes: Mapping[int, int] | None = None) -> boundary.BoundaryCounts:
    """Adds one image; returns its whole-image PR counts.

    Args:
      pred_h, pred_v, truth_h, truth_v: predicted and ground-truth edge weights.
      instances: optional (H, W) instance map (`background` = no object); when
        given, the object-neighbourhood protocol is applied.
      instance_classes: optional {instance id: class id}; when given (with
        `instances`), per-class crops are evaluated too.
    """
    neighbourhood = None
    if instances is not None:
      instances = np.asarray(instances)
      neighbourhood = lr.object_neighbourhood(instances, radius=self.radius,
                                              background=self.background)
    pr, counts = self._counts(pred_h, pred_v, truth_h, truth_v, neighbourhood)
    self.total = self.total + counts
    self.boundary.append(pr)
    self.num_images += 1
    if instance_classes is not None:
      if instances is None:
        raise ValueError("UcmEvaluation.add: instance_classes needs instances")
      self._add_crops(pred_h, pred_v, truth_h, truth_v, instances, instance_classes)
    return pr

  def _add_crops(self, pred_h, pred_v, truth_h, truth_v, instances, instance_classes):
    pred_h, pred_v, truth_h, truth_v = map(np.asarray, (pred_h, pred_v, truth_h, truth_v))
    diagonal = float(np.hypot(*instances.shape))
    margin = int(np.ceil(self.radius))
    for instance_id, (rows, cols) in lr.instance_crops(instances, radius=margin,
                                                       background=self.background):
      if instance_id not in instance_classes:
        raise ValueError(f"UcmEvaluation.add: instance {instance_id} is in the instance map "
                         f"but not in instance_classes (has {sorted(instance_classes)})")
      class_id = int(instance_classes[instance_id])
      crop = instances[rows, cols]
      same_class = [i for i, c in instance_classes.items() if int(c) == class_id]
      class_mask = np.isin(crop, same_class) & (crop != self.background)
      edge_cols, edge_rows = slice(cols.start, cols.stop - 1), slice(rows.start, rows.stop - 1)
      crop_truth = class_target(truth_h[rows, edge_cols], truth_v[edge_rows, cols], class_mask)
      neighbourhood = lr.object_neighbourhood(class_mask.astype(np.int64), radius=self.radius)
      pr, counts = self._counts(pred_h[rows, edge_cols], pred_v[edge_rows, cols], *crop_truth,
                                neighbourhood, diagonal=diagonal)
      totals = self.per_class.setdefault(class_id, _ClassTotals(
          lr.LevelRecoveryCounts.zeros(len(self.levels), len(self.thresholds)), []))
      totals.counts = totals.counts + counts
      totals.crops.append(pr)

  def merge(self, other: "UcmEvaluation") -> None:
    if other.levels != self.levels or not np.array_equal(other.thresholds, self.thresholds):
      raise ValueError("UcmEvaluation.merge: levels and thresholds must match")
    self.total = self.total + other.total
    self.boundary.extend(other.boundary)
    self.num_images += other.num_images
    for class_id, theirs in other.per_class.items():
      mine = self.per_class.setdefault(class_id, _ClassTotals(
          lr.LevelRecoveryCounts.zeros(len(self.levels), len(self.thresholds)), []))
      mine.counts = mine.counts + theirs.counts
      mine.crops.extend(theirs.crops)

  def result(self) -> dict:
    """Thresholds, levels, LRF (levels x thresholds), FDF, the boundary benchmark
    (`boundary.BoundaryResult`), and per class the same with `num_instances`."""
    if not self.num_images:
      raise ValueError("UcmEvaluation.result: no image was added")
    return {
        "thresholds": self.thresholds,
        "levels": self.levels,
        "lrf": self.total.level_recovery_fraction(),
        "fdf": self.total.false_discovery_fraction(),
        "num_images": self.num_images,
        "boundary": boundary.collect_boundary_counts(self.boundary),
        "per_class": {
            class_id: {"lrf": totals.counts.level_recovery_fraction(),
                       "fdf": totals.counts.false_discovery_fraction(),
                       "num_instances": len(totals.crops),
                       "boundary": boundary.collect_boundary_counts(totals.crops)}
            for class_id, totals in sorted(self.per_class.items())},
    }


class BsdsUcmScores:
  """The BSDS boundary and region benchmarks of one method's UCMs over a dataset.

  Per image (`add`), the official benchmark's per-image statistics of a ucm2 map at
  `num_thresholds` thresholds (`boundary.counts_from_ucm2`, as `evaluation_bdry_image.m`;
  `region.region_counts_from_ucm2`, as `evaluation_reg_image.m`) against every annotator;
  `result()` reduces them as `collect_eval_bdry.m` / `collect_eval_reg.m`. Shared by the
  evaluations that score a learned hierarchy next to a colour baseline on BSDS500 (DEL,
  CAST), so both are scored by one code path.
  """

  def __init__(self, num_thresholds: int = boundary.DEFAULT_NUM_THRESHOLDS):
    self.num_thresholds = int(num_thresholds)
    self._boundary: list[boundary.BoundaryCounts] = []
    self._region: list[region.RegionCounts] = []

  def add(self, ucm2: np.ndarray, truths: Sequence[np.ndarray],
          truth_boundaries: Sequence[np.ndarray], *, max_distance: float) -> None:
    """One image: its (2H+1, 2W+1) ucm2, the annotators' label maps and boundary maps."""
    self._boundary.append(boundary.counts_from_ucm2(
        ucm2, truth_boundaries, max_distance=max_distance, num_thresholds=self.num_thresholds))
    self._region.append(region.region_counts_from_ucm2(
        ucm2, truths, num_thresholds=self.num_thresholds))

  def result(self) -> tuple[boundary.BoundaryResult, region.RegionResult]:
    if not self._boundary:
      raise ValueError("BsdsUcmScores.result: no image was added")
    return (boundary.collect_boundary_counts(self._boundary),
            region.collect_region_counts(self._region))


def ucm2_from_edges(h: np.ndarray, v: np.ndarray) -> np.ndarray:
  """(H, W-1) horizontal and (H-1, W) vertical edge weights -> the (2H+1, 2W+1) ucm2."""
  return np.asarray(grid.interpixel_to_ucm2(grid.edges_to_interpixel(h, v)))
