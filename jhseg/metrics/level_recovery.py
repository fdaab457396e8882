"""Level Recovery Fraction and False Discovery Fraction (Lapertot, Chierchia, Perret).

The ground truth is a hierarchy given as ultrametric edge weights with a few
levels (Ultrametric Pascal-Part: 1 on object boundaries, 0.5 on part
boundaries, 0 elsewhere); the prediction is an ultrametric (or any edge
weights) on the same 4-adjacency edges. Cutting the prediction at a
threshold t gives a segmentation whose contours are the edges with
predicted weight > t (the regions of the cut are the components of the
edges with weight <= t, the convention of `jhseg.hierarchy.cut_at_threshold`;
for weights that are not an ultrametric, C(t) is the boundary of that cut,
i.e. the closed part of {weight > t}). With E_lambda the ground-truth edges
of level lambda and C(t) the predicted contour edges at t:

  LRF_lambda(t) = |E_lambda  intersect  C(t)| / |E_lambda|          (eq. 3)
  FDF(t)        = |C(t) \\ (union over lambda > 0 of E_lambda)| / |C(t)|  (eq. 4)

LRF_lambda(t) is the share of the level-lambda contours still present in the
segmentation at threshold t; it is non-increasing in t, and a good hierarchy
keeps the coarse (object) level up to high thresholds and loses the fine
(part) level around the middle. FDF(t) is the share of the predicted
contours that are no ground-truth contour at all.

Source note: the paper's text could not be consulted while this module was
written; eqs. 3-4 above are reconstructed from the project's description of
them (fraction of each level's contours recovered at t; fraction of the
predicted contours at t matching no ground-truth contour) and should be
checked against the paper.

Object-neighbourhood protocol (the paper's evaluation on Pascal-Part, whose
annotations cover the objects only): the object masks are merged, dilated by
20 pixels, the contour parts outside that neighbourhood are dropped, and so
are the contours that are no longer closed. Choices made here where the
text leaves room, with the reasons:

- An edge is inside the neighbourhood when both of its pixels are: an edge
  is the interface between two pixels, and half-inside edges lie on the
  neighbourhood's own border, where clipping happens.
- The dilation is Euclidean (a disc of radius 20 px, from a distance
  transform), the isotropic reading of "dilate by 20 px".
- A contour edge is "closed" when it separates two different regions of the
  partition that the kept contour edges induce on the whole image (its two
  pixels are not connected without crossing a kept contour). Dangling
  pieces, such as a background contour cut open by the neighbourhood, are
  therefore dropped; contours closed by the image border are kept (they
  separate regions). Applied after clipping, to prediction and ground truth
  alike (for an ultrametric ground truth it drops nothing).
- Matching is exact, edge for edge, by default (`tolerance=0`): the network
  predicts the same edges the ground truth labels, so no alignment is
  needed. `tolerance=d > 0` gives a BSDS-like slack: a ground-truth edge
  counts as recovered when a predicted contour edge lies within d pixels,
  and a predicted edge is a false discovery when no ground-truth contour
  edge lies within d pixels (distances between edge midpoints; not the
  one-to-one assignment of the BSDS matcher, which would make LRF depend on
  the other levels).
- Dataset values pool the counts over images (sum of recovered edges over
  sum of ground-truth edges), as BSDS pools cntR/sumR: images with few
  edges of a level do not dominate. `FDF(t) = 0` when no contour is
  predicted (no discovery, no false one); `LRF = nan` for a level with no
  ground-truth edge.

Per-class evaluation (the paper's per-class figure): for every instance, the
image is cropped to the instance's bounding box enlarged by the
neighbourhood radius, the protocol is applied inside the crop (with the
masks of all objects visible in it), and the counts go to the instance's
class.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

DEFAULT_RADIUS = 20  # pixels, as in the paper's protocol
DEFAULT_LEVELS = (0.5, 1.0)  # Ultrametric Pascal-Part: parts, objects


def default_thresholds(num: int = 99) -> np.ndarray:
  """`num` thresholds evenly inside (0, 1), as the BSDS benchmark's sweep."""
  return np.linspace(1.0 / (num + 1), 1.0 - 1.0 / (num + 1), num)


def _check_edges(h, v, name: str, shape: tuple[int, int] | None = None):
  h = np.asarray(h)
  v = np.asarray(v)
  if h.ndim != 2 or v.ndim != 2:
    raise ValueError(f"level_recovery: {name} edges must be 2-D (h (H, W-1), v (H-1, W)), "
                     f"got h {h.shape}, v {v.shape}")
  height, width = h.shape[0], v.shape[1]
  if h.shape != (height, width - 1) or v.shape != (height - 1, width):
    raise ValueError(f"level_recovery: {name} edges h {h.shape} and v {v.shape} do not "
                     f"describe one H x W image (expected h (H, W-1), v (H-1, W))")
  if shape is not None and (height, width) != shape:
    raise ValueError(f"level_recovery: {name} edges are for a {height}x{width} image, "
                     f"expected {shape[0]}x{shape[1]}")
  return h, v


def object_neighbourhood(instances, *, radius: float = DEFAULT_RADIUS,
                         background: int = 0) -> np.ndarray:
  """Merged object masks dilated by a disc of `radius` pixels, (H, W) bool.

  `instances` is an (H, W) instance map where `background` marks no object.
  An image without objects has an empty neighbourhood.
  """
  instances = np.asarray(instances)
  if instances.ndim != 2:
    raise ValueError(f"object_neighbourhood: instances must be an (H, W) map, got "
                     f"shape {instances.shape}")
  objects = instances != background
  if not objects.any():
    return objects
  return ndimage.distance_transform_edt(~objects) <= radius


def edges_within(mask) -> tuple[np.ndarray, np.ndarray]:
  """Edges (h, v) with both pixels inside the (H, W) boolean `mask`."""
  mask = np.asarray(mask, bool)
  return mask[:, :-1] & mask[:, 1:], mask[:-1, :] & mask[1:, :]


def contour_regions(contour_h, contour_v) -> np.ndarray:
  """(H, W) labels 1..n of the pixels connected without crossing a contour edge.

  With contours `w > t` this is the cut of (h, v) at threshold t, the
  partition of `jhseg.hierarchy.cut_at_threshold` up to label numbering,
  computed with one `scipy.ndimage.label` (fast enough for threshold sweeps).
  """
  contour_h = np.asarray(contour_h, bool)
  contour_v = np.asarray(contour_v, bool)
  height, width = contour_v.shape[0] + 1, contour_h.shape[1] + 1
  sites = np.zeros((2 * height - 1, 2 * width - 1), bool)
  sites[::2, ::2] = True
  sites[::2, 1::2] = ~contour_h
  sites[1::2, ::2] = ~contour_v
  # Corner sites stay False, so 4-connectivity links pixels through open edges only.
  labels, _ = ndimage.label(sites)
  return labels[::2, ::2]


def closed_contours(contour_h, contour_v) -> tuple[np.ndarray, np.ndarray]:
  """Keeps the contour edges that separate two different regions.

  The kept edges induce a partition (components of the pixel graph without
  them); an edge whose two pixels end up in the same region is a dangling
  piece of an open contour and is dropped. The result is exactly the set of
  boundary edges of that partition, so it is closed.
  """
  contour_h = np.asarray(contour_h, bool)
  contour_v = np.asarray(contour_v, bool)
  regions = contour_regions(contour_h, contour_v)
  return (contour_h & (regions[:, :-1] != regions[:, 1:]),
          contour_v & (regions[:-1, :] != regions[1:, :]))


def contours_in_neighbourhood(contour_h, contour_v, neighbourhood=None):
  """The paper's protocol: clip the contours to `neighbourhood`, keep closed ones.

  Without a neighbourhood only the closedness filter applies (a no-op for
  the contours of a segmentation).
  """
  contour_h = np.asarray(contour_h, bool)
  contour_v = np.asarray(contour_v, bool)
  if neighbourhood is not None:
    inside_h, inside_v = edges_within(neighbourhood)
    contour_h, contour_v = contour_h & inside_h, contour_v & inside_v
  return closed_contours(contour_h, contour_v)


def _interpixel(h: np.ndarray, v: np.ndarray) -> np.ndarray:
  """Boolean interpixel grid (2H-1, 2W-1) with the edges of (h, v) set."""
  grid = np.zeros((2 * h.shape[0] - 1, 2 * v.shape[1] - 1), bool)
  grid[::2, 1::2] = h
  grid[1::2, ::2] = v
  return grid


def _within_tolerance(target_h, target_v, tolerance: float):
  """Edges (h, v) lying within `tolerance` pixels of some edge of (target_h, target_v)."""
  grid = _interpixel(target_h, target_v)
  if not grid.any():
    return np.zeros_like(target_h), np.zeros_like(target_v)
  # Interpixel sites are half a pixel apart.
  distance = ndimage.distance_transform_edt(~grid, sampling=0.5)
  near = distance <= tolerance + 1e-9
  return near[::2, 1::2], near[1::2, ::2]


def threshold_classes(h, v, thresholds) -> np.ndarray:
  """For each threshold, how many distinct weights of (h, v) are <= it.

  Two thresholds with the same value select the same contours (weight > t),
  so threshold sweeps compute each distinct cut once.
  """
  values = np.unique(np.concatenate([np.ravel(h), np.ravel(v)]))
  return np.searchsorted(values, np.asarray(thresholds, np.float64), side="right")


@dataclasses.dataclass
class LevelRecoveryCounts:
  """Sufficient statistics of eqs. 3-4 for one image (or summed over many).

  Attributes:
    truth: (L,) number of ground-truth edges of each level.
    recovered: (L, T) of those, how many are predicted contours at each threshold.
    predicted: (T,) number of predicted contour edges at each threshold.
    false: (T,) of those, how many are no ground-truth contour.
  """
  truth: np.ndarray
  recovered: np.ndarray
  predicted: np.ndarray
  false: np.ndarray

  @classmethod
  def zeros(cls, num_levels: int, num_thresholds: int) -> "LevelRecoveryCounts":
    return cls(np.zeros(num_levels, np.int64),
               np.zeros((num_levels, num_thresholds), np.int64),
               np.zeros(num_thresholds, np.int64), np.zeros(num_thresholds, np.int64))

  def __add__(self, other: "LevelRecoveryCounts") -> "LevelRecoveryCounts":
    return LevelRecoveryCounts(self.truth + other.truth, self.recovered + other.recovered,
                               self.predicted + other.predicted, self.false + other.false)

  def level_recovery_fraction(self) -> np.ndarray:
    """(L, T) LRF_lambda(t), eq. 3; nan for a level without ground-truth edges."""
    with np.errstate(invalid="ignore", divide="ignore"):
      return np.where(self.truth[:, None] > 0,
                      self.recovered / np.maximum(self.truth[:, None], 1), np.nan)

  def false_discovery_fraction(self) -> np.ndarray:
    """(T,) FDF(t), eq. 4; 0 where nothing is predicted."""
    return np.where(self.predicted > 0, self.false / np.maximum(self.predicted, 1), 0.0)


def level_recovery_counts(pred_h, pred_v, truth_h, truth_v, *,
                          thresholds: Sequence[float] | np.ndarray,
                          levels: Sequence[float] = DEFAULT_LEVELS,
                          neighbourhood=None,
                          tolerance: float = 0.0) -> LevelRecoveryCounts:
  """Counts of eqs. 3-4 for one image.

  Args:
    pred_h, pred_v: predicted edge weights, (H, W-1) and (H-1, W).
    truth_h, truth_v: ground-truth ultrametric edge weights, same shapes; an
      edge belongs to level lambda when its weight equals lambda (to 1e-6).
    thresholds: the thresholds t; contours at t are the edges with weight > t.
    levels: the ground-truth levels lambda to report, e.g. (0.5, 1.0).
    neighbourhood: optional (H, W) bool mask (see `object_neighbourhood`);
      when given, the object-neighbourhood protocol is applied.
    tolerance: matching slack in pixels (0: exact edge matching).
  """
  truth_h, truth_v = _check_edges(truth_h, truth_v, "ground-truth")
  shape = (truth_h.shape[0], truth_v.shape[1])
  pred_h, pred_v = _check_edges(pred_h, pred_v, "predicted", shape)
  if neighbourhood is not None and np.shape(neighbourhood) != shape:
    raise ValueError(f"level_recovery_counts: neighbourhood has shape "
                     f"{np.shape(neighbourhood)}, expected {shape}")
  if tolerance < 0:
    raise ValueError(f"level_recovery_counts: tolerance must be >= 0, got {tolerance}")
  thresholds = np.asarray(thresholds, np.float64).ravel()
  levels = np.asarray(levels, np.float64).ravel()
  if thresholds.size == 0 or levels.size == 0:
    raise ValueError("level_recovery_counts: needs at least one threshold and one level")

  truth_contour = contours_in_neighbourhood(truth_h > 0, truth_v > 0, neighbourhood)
  level_masks = [(truth_contour[0] & np.isclose(truth_h, level, atol=1e-6),
                  truth_contour[1] & np.isclose(truth_v, level, atol=1e-6))
                 for level in levels]
  if tolerance > 0:
    near_truth = _within_tolerance(*truth_contour, tolerance)
  else:
    near_truth = truth_contour

  counts = LevelRecoveryCounts.zeros(len(levels), len(thresholds))
  counts.truth[:] = [m_h.sum() + m_v.sum() for m_h, m_v in level_masks]
  # With a tolerance, each predicted edge's largest threshold at which it is a
  # (kept) contour; the kept contours shrink as t grows (clipping and the
  # closedness filter are monotone), so "contour at t" is "survival >= t".
  survival = np.full((2 * shape[0] - 1, 2 * shape[1] - 1), -np.inf) if tolerance else None
  classes = threshold_classes(pred_h, pred_v, thresholds)
  done: dict[int, int] = {}  # threshold class -> first column computed for it
  for k, threshold in enumerate(thresholds):
    if classes[k] in done:  # same contours as an earlier threshold
      first = done[classes[k]]
      counts.predicted[k], counts.false[k] = counts.predicted[first], counts.false[first]
      counts.recovered[:, k] = counts.recovered[:, first]
      continue
    done[classes[k]] = k
    contour_h, contour_v = contours_in_neighbourhood(pred_h > threshold, pred_v > threshold,
                                                     neighbourhood)
    counts.predicted[k] = contour_h.sum() + contour_v.sum()
    counts.false[k] = ((contour_h & ~near_truth[0]).sum()
                       + (contour_v & ~near_truth[1]).sum())
    if tolerance:
      sites = _interpixel(contour_h, contour_v)
      survival[sites] = np.maximum(survival[sites], threshold)
    else:
      for l, (mask_h, mask_v) in enumerate(level_masks):
        counts.recovered[l, k] = (mask_h & contour_h).sum() + (mask_v & contour_v).sum()
  if tolerance:
    # Best survival within `tolerance` pixels (2 * tolerance interpixel sites).
    radius = int(np.floor(2 * tolerance + 1e-9))
    offsets = np.arange(-radius, radius + 1)
    disc = offsets[:, None] ** 2 + offsets[None, :] ** 2 <= (2 * tolerance) ** 2 + 1e-9
    reach = ndimage.grey_dilation(survival, footprint=disc, mode="constant", cval=-np.inf)
    reach_h, reach_v = reach[::2, 1::2], reach[1::2, ::2]
    for l, (mask_h, mask_v) in enumerate(level_masks):
      counts.recovered[l] = [(reach_h[mask_h] >= t).sum() + (reach_v[mask_v] >= t).sum()
                             for t in thresholds]
  return counts


def instance_crops(instances, *, radius: int = DEFAULT_RADIUS, background: int = 0):
  """Yields (instance id, (row slice, column slice)) of each instance's enlarged box.

  Instance ids must be integers >= 1 (any `background` value marks no object).
  """
  instances = np.asarray(instances)
  ids = instances[instances != background]
  if ids.size and (not np.issubdtype(ids.dtype, np.integer) or ids.min() < 1):
    raise ValueError(f"instance_crops: instance ids must be integers >= 1, got "
                     f"{ids.dtype} values from {ids.min()}")
  boxes = ndimage.find_objects(np.where(instances == background, 0,
                                        instances).astype(np.int64))
  height, width = instances.shape
  for index, box in enumerate(boxes):
    if box is None:
      continue
    rows, cols = box
    yield index + 1, (slice(max(rows.start - radius, 0), min(rows.stop + radius, height)),
                      slice(max(cols.start - radius, 0), min(cols.stop + radius, width)))


class LevelRecoveryAccumulator:
  """LRF/FDF curves over a dataset, whole images and per object class.

  Each `add` computes one image's counts (safe to run in worker processes and
  `merge` the accumulators); `result()` pools them.
  """

  def __init__(self, *, levels: Sequence[float] = DEFAULT_LEVELS,
               thresholds: Sequence[float] | np.ndarray | None = None,
               radius: float = DEFAULT_RADIUS, tolerance: float = 0.0,
               background: int = 0):
    self.levels = tuple(float(level) for level in levels)
    self.thresholds = (default_thresholds() if thresholds is None
                       else np.asarray(thresholds, np.float64).ravel())
    self.radius = radius
    self.tolerance = tolerance
    self.background = background
    self.total = LevelRecoveryCounts.zeros(len(self.levels), len(self.thresholds))
    self.per_class: dict[int, LevelRecoveryCounts] = {}
    self.instances_per_class: dict[int, int] = {}
    self.num_images = 0

  def _counts(self, pred_h, pred_v, truth_h, truth_v, neighbourhood):
    return level_recovery_counts(pred_h, pred_v, truth_h, truth_v,
                                 thresholds=self.thresholds, levels=self.levels,
                                 neighbourhood=neighbourhood, tolerance=self.tolerance)

  def add(self, pred_h, pred_v, truth_h, truth_v, *, instances=None,
          instance_classes: Mapping[int, int] | None = None) -> LevelRecoveryCounts:
    """Adds one image; returns its whole-image counts.

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
      neighbourhood = object_neighbourhood(instances, radius=self.radius,
                                           background=self.background)
    counts = self._counts(pred_h, pred_v, truth_h, truth_v, neighbourhood)
    self.total = self.total + counts
    self.num_images += 1
    if instance_classes is not None:
      if instances is None:
        raise ValueError("LevelRecoveryAccumulator.add: instance_classes needs instances")
      self._add_crops(pred_h, pred_v, truth_h, truth_v, instances, instance_classes)
    return counts

  def _add_crops(self, pred_h, pred_v, truth_h, truth_v, instances, instance_classes):
    pred_h, pred_v, truth_h, truth_v = map(np.asarray, (pred_h, pred_v, truth_h, truth_v))
    radius = int(np.ceil(self.radius))
    for instance_id, (rows, cols) in instance_crops(instances, radius=radius,
                                                    background=self.background):
      if instance_id not in instance_classes:
        raise ValueError(f"LevelRecoveryAccumulator.add: instance {instance_id} is in the "
                         f"instance map but not in instance_classes "
                         f"(has {sorted(instance_classes)})")
      crop = instances[rows, cols]
      edge_cols = slice(cols.start, cols.stop - 1)
      edge_rows = slice(rows.start, rows.stop - 1)
      counts = self._counts(pred_h[rows, edge_cols], pred_v[edge_rows, cols],
                            truth_h[rows, edge_cols], truth_v[edge_rows, cols],
                            object_neighbourhood(crop, radius=self.radius,
                                                 background=self.background))
      class_id = int(instance_classes[instance_id])
      previous = self.per_class.get(class_id)
      self.per_class[class_id] = counts if previous is None else previous + counts
      self.instances_per_class[class_id] = self.instances_per_class.get(class_id, 0) + 1

  def merge(self, other: "LevelRecoveryAccumulator") -> None:
    if other.levels != self.levels or not np.array_equal(other.thresholds, self.thresholds):
      raise ValueError("LevelRecoveryAccumulator.merge: levels and thresholds must match")
    self.total = self.total + other.total
    self.num_images += other.num_images
    for class_id, counts in other.per_class.items():
      previous = self.per_class.get(class_id)
      self.per_class[class_id] = counts if previous is None else previous + counts
      self.instances_per_class[class_id] = (self.instances_per_class.get(class_id, 0)
                                            + other.instances_per_class[class_id])

  def result(self) -> dict:
    """Thresholds, LRF (levels x thresholds), FDF, and the same per class."""
    return {
        "thresholds": self.thresholds,
        "levels": self.levels,
        "lrf": self.total.level_recovery_fraction(),
        "fdf": self.total.false_discovery_fraction(),
        "num_images": self.num_images,
        "per_class": {
            class_id: {"lrf": counts.level_recovery_fraction(),
                       "fdf": counts.false_discovery_fraction(),
                       "num_instances": self.instances_per_class[class_id]}
            for class_id, counts in sorted(self.per_class.items())},
    }


def level_survival(result: Mapping, *, fraction: float = 0.5) -> dict[float, float]:
  """Per level, the largest threshold at which LRF is still >= `fraction`.

  Summarises LRF curves in one number per level, e.g. to check that a model
  recovers the levels in order (objects survive to higher thresholds than
  parts). A level never recovered that well gets nan. Assumes, as LRF is,
  curves non-increasing in t (see the module docstring).
  """
  thresholds = np.asarray(result["thresholds"])
  survival = {}
  for level, curve in zip(result["levels"], np.asarray(result["lrf"])):
    kept = np.flatnonzero(np.nan_to_num(curve, nan=-1.0) >= fraction)
    survival[float(level)] = float(thresholds[kept[-1]]) if kept.size else float("nan")
  return survival


def summary(result: Mapping, *, fraction: float = 0.5) -> dict:
  """One-number summaries of LRF/FDF curves, for tables (whole set and per class).

  Per level: `survival` (see `level_survival`) and `mean_lrf`, the mean of
  LRF over the thresholds (the area under the curve for an even sweep); and
  `mean_fdf`, the mean FDF. `per_class` holds the same for every class.
  """
  def one(curves: Mapping) -> dict:
    full = {"thresholds": result["thresholds"], "levels": result["levels"], **curves}
    # A level's LRF row is all nan (no ground-truth edge of it) or has no nan.
    mean_lrf = [float(np.mean(row)) for row in np.asarray(full["lrf"])]
    return {"survival": level_survival(full, fraction=fraction),
            "mean_lrf": {float(level): float(value)
                         for level, value in zip(full["levels"], mean_lrf)},
            "mean_fdf": float(np.mean(full["fdf"]))}

  table = one(result)
  table["per_class"] = {class_id: {**one(curves), "num_instances": curves["num_instances"]}
                        for class_id, curves in result.get("per_class", {}).items()}
  return table
