"""Level Recovery Fraction and False Discovery Fraction (Lapertot, Chierchia, Perret, sec. 4).

The ground truth is a hierarchy given as ultrametric edge weights with a few
levels (Ultrametric Pascal-Part: 1 on object boundaries, 0.5 on part
boundaries, 0 elsewhere); the prediction is an ultrametric (or any edge
weights) on the same 4-adjacency edges. Section 4 binarises the prediction at
a threshold t in [0, 1]: Upred_t(e) = 0 if Upred(e) < t, else 1, so the
contours C(t) of the cut at t are the edges with weight >= t (`contours_at`).
With E_lambda the ground-truth edges of level lambda:

  LRF(lambda, t) = |{e in E_lambda : e matches an edge of C(t)}| / |E_lambda|     (eq. 3)
  FDF(t)         = |{e in C(t) : e matches no ground-truth contour}| / |C(t)|      (eq. 4)

LRF(lambda, t) is the share of the level-lambda contours still recovered at t;
it is non-increasing in t, and a good hierarchy keeps the coarse (object)
level up to high thresholds and loses the fine (part) level around the
middle. FDF(t) is the share of the predicted contours that match no
ground-truth contour. The target fed in as its own prediction gives
LRF(lambda, t) = 1 for every t <= lambda, 0 above, and FDF(t) = 0 for every t.

What "match" means: the paper adapts HSA's boundary recovery order by
hierarchy level, which matches boundaries with the BSDS correspondence, and
relates FDF to the false positives of the PR curves. The default is
therefore the BSDS matcher with its tolerance (0.0075 of the image
diagonal), computed together with the PR curves on the same boundary maps:
see `jhseg.metrics.ucm_evaluation`, where LRF is the BSDS recall split by the
level of the ground-truth boundary pixel and FDF is 1 - BSDS precision. This
module holds the definitions shared by both matchings and the exact matching
(`level_recovery_counts`: an edge matches only itself), kept as an option
because it needs no matching tolerance: it is right for predictions on the
very edges the target labels, but a contour one pixel off is missed (a
perfect hierarchy shifted by one pixel scores LRF ~0.5 instead of ~1).

Object-neighbourhood protocol (sec. 5, for LRF, FDF and the PR curves on
Pascal-Part, whose annotations cover the objects only): the object masks are
merged, dilated by 20 pixels, the contour parts outside that neighbourhood
are dropped, and so are the contours that are no longer closed. Choices made
here where the text leaves room, with the reasons:

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
- Dataset values pool the counts over images (sum of recovered over sum of
  ground-truth contours), as BSDS pools cntR/sumR: images with few contours
  of a level do not dominate. `FDF(t) = 0` when no contour is predicted (no
  discovery, no false one); `LRF = nan` for a level with no ground-truth
  contour.

Faithfulness (deliberate deviations from sec. 4, with reasons):

- Weight-0 edges are never contours, also at t = 0 (t = 0 is read as the
  limit t -> 0+). Literally, at t = 0 every edge is a contour (the cut into
  single pixels), under which no prediction could have FDF(0) = 0, which the
  paper states a good segmentation should have at every threshold.
- The sweep (`sweep_thresholds`) is the BSDS benchmark's N interior
  thresholds plus both ends, t = 0, 1/(N+1), ..., 1, so the levels 0.5 and 1
  of the target are thresholds of the sweep.
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

DEFAULT_RADIUS = 20  # pixels, as in the paper's protocol
DEFAULT_LEVELS = (0.5, 1.0)  # Ultrametric Pascal-Part: parts, objects
DEFAULT_NUM_THRESHOLDS = 99  # interior thresholds, as the BSDS benchmark


def sweep_thresholds(num: int = DEFAULT_NUM_THRESHOLDS) -> np.ndarray:
  """The LRF/FDF sweep: 0, the BSDS benchmark's `num` thresholds, 1 (`num` + 2 values).

  t = k / (num + 1) for k = 0 .. num + 1, so both ends of sec. 4's t in [0, 1]
  are included (99 gives 0, 0.01, ..., 1; 49 gives 0, 0.02, ..., 1).
  """
  if num < 1:
    raise ValueError(f"sweep_thresholds: num must be >= 1, got {num}")
  return np.linspace(0.0, 1.0, num + 2)


def default_thresholds(num: int = DEFAULT_NUM_THRESHOLDS) -> np.ndarray:
  """`num` thresholds evenly inside (0, 1), as the BSDS benchmark's sweep.

  For region cuts `weight > t` (`jhseg.metrics.fop`); LRF/FDF use `sweep_thresholds`.
  """
  return np.linspace(1.0 / (num + 1), 1.0 - 1.0 / (num + 1), num)


def contours_at(h, v, threshold: float) -> tuple[np.ndarray, np.ndarray]:
  """Sec. 4's binarisation: edges with weight >= t, never an edge of weight 0.

  (Weight-0 edges are kept out at t = 0 too; see Faithfulness in the module docstring.)
  """
  h = np.asarray(h)
  v = np.asarray(v)
  return (h >= threshold) & (h > 0), (v >= threshold) & (v > 0)


def contour_classes(h, v, thresholds) -> np.ndarray:
  """For each threshold, how many distinct positive weights of (h, v) are >= it.

  Two thresholds with the same count select the same contours (`contours_at`),
  so threshold sweeps compute each distinct cut once.
  """
  values = np.unique(np.concatenate([np.ravel(h), np.ravel(v)]))
  values = values[values > 0]
  return values.size - np.searchsorted(values, np.asarray(thresholds, np.float64), side="left")


def threshold_classes(h, v, thresholds) -> np.ndarray:
  """For each threshold, how many distinct weights of (h, v) are <= it (cuts `weight > t`).

  The sharing rule of region cuts `weight > t` (`jhseg.metrics.fop`); the
  LRF/FDF sweep's rule is `contour_classes`.
  """
  values = np.unique(np.concatenate([np.ravel(h), np.ravel(v)]))
  return np.searchsorted(values, np.asarray(thresholds, np.float64), side="right")


def check_edges(h, v, name: str, shape: tuple[int, int] | None = None):
  """(h, v) as arrays, checked to be the (H, W-1), (H-1, W) edges of one (`shape`) image."""
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
                          neighbourhood=None) -> LevelRecoveryCounts:
  """Counts of eqs. 3-4 for one image with exact matching (an edge matches only itself).

  The default of the evaluations is the BSDS matching of
  `jhseg.metrics.ucm_evaluation`; see the module docstring for when exact
  matching is the right choice.

  Args:
    pred_h, pred_v: predicted edge weights, (H, W-1) and (H-1, W).
    truth_h, truth_v: ground-truth ultrametric edge weights, same shapes; an
      edge belongs to level lambda when its weight equals lambda (to 1e-6).
    thresholds: the thresholds t; contours at t are `contours_at(pred, t)`.
    levels: the ground-truth levels lambda to report, e.g. (0.5, 1.0).
    neighbourhood: optional (H, W) bool mask (see `object_neighbourhood`);
      when given, the object-neighbourhood protocol is applied.
  """
  truth_h, truth_v = check_edges(truth_h, truth_v, "ground-truth")
  shape = (truth_h.shape[0], truth_v.shape[1])
  pred_h, pred_v = check_edges(pred_h, pred_v, "predicted", shape)
  if neighbourhood is not None and np.shape(neighbourhood) != shape:
    raise ValueError(f"level_recovery_counts: neighbourhood has shape "
                     f"{np.shape(neighbourhood)}, expected {shape}")
  thresholds = np.asarray(thresholds, np.float64).ravel()
  levels = np.asarray(levels, np.float64).ravel()
  if thresholds.size == 0 or levels.size == 0:
    raise ValueError("level_recovery_counts: needs at least one threshold and one level")

  truth_contour = contours_in_neighbourhood(truth_h > 0, truth_v > 0, neighbourhood)
  level_masks = [(truth_contour[0] & np.isclose(truth_h, level, atol=1e-6),
                  truth_contour[1] & np.isclose(truth_v, level, atol=1e-6))
                 for level in levels]
  counts = LevelRecoveryCounts.zeros(len(levels), len(thresholds))
  counts.truth[:] = [m_h.sum() + m_v.sum() for m_h, m_v in level_masks]
  classes = contour_classes(pred_h, pred_v, thresholds)
  done: dict[int, int] = {}  # contour class -> first column computed for it
  for k, threshold in enumerate(thresholds):
    if classes[k] in done:  # same contours as an earlier threshold
      first = done[classes[k]]
      counts.predicted[k], counts.false[k] = counts.predicted[first], counts.false[first]
      counts.recovered[:, k] = counts.recovered[:, first]
      continue
    done[classes[k]] = k
    contour_h, contour_v = contours_in_neighbourhood(*contours_at(pred_h, pred_v, threshold),
                                                     neighbourhood)
    counts.predicted[k] = contour_h.sum() + contour_v.sum()
    counts.false[k] = ((contour_h & ~truth_contour[0]).sum()
                       + (contour_v & ~truth_contour[1]).sum())
    for l, (mask_h, mask_v) in enumerate(level_masks):
      counts.recovered[l, k] = (mask_h & contour_h).sum() + (mask_v & contour_v).sum()
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


def level_survival(result: Mapping, *, fraction: float = 0.5) -> dict[float, float]:
  """Per level, the largest threshold at which LRF keeps `fraction` of its value at the lowest one.

  s_lambda = max{t : LRF(lambda, t) >= fraction * LRF(lambda, t_1)}, t_1 the
  lowest threshold of the sweep: with fraction 0.5, where the level has lost
  half of what the finest cut recovers. Relative to LRF(lambda, t_1), so a
  method that recovers a level only partly (e.g. a network not trained on
  it) still gets the threshold where it lets that level go. The one
  definition of "survival" of jhseg (tables, the task's level-order check).
  The target fed in as its own prediction gives s_lambda = lambda. A level
  never recovered (LRF(lambda, t_1) = 0 or nan) gets nan. Assumes, as LRF is,
  curves non-increasing in t.
  """
  thresholds = np.asarray(result["thresholds"])
  survival = {}
  for level, curve in zip(result["levels"], np.asarray(result["lrf"], np.float64)):
    first = curve[0]
    if not first > 0:  # 0 or nan
      survival[float(level)] = float("nan")
      continue
    kept = np.flatnonzero(np.nan_to_num(curve, nan=-1.0) >= fraction * first)
    survival[float(level)] = float(thresholds[kept[-1]])
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
