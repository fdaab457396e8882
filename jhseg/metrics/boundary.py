"""BSDS500 boundary benchmark: per-image counts, then ODS / OIS / AP.

Protocol of the official benchmark (Martin, Fowlkes & Malik, PAMI 2004;
Arbelaez, Maire, Fowlkes & Malik, PAMI 2011, BSR `bench/`):

1. A soft boundary map `pb` is binarised at T thresholds, `pb >= t_k` with
   t_k = linspace(1/(T+1), 1 - 1/(T+1), T) (T = 99 by default). A UCM in the
   double-size `ucm2` format is first reduced to image size, `ucm2[2::2, 2::2]`
   (MATLAB's `ucm2(3:2:end, 3:2:end)`). A list of segmentations gives one
   binary map per segmentation (its image-size boundaries, `seg2bdry`) with
   "thresholds" 1..S.
2. Each binary map is thinned to one-pixel-wide curves (MATLAB
   `bwmorph(bmap, 'thin', Inf)`, see `thin`).
3. For each human annotator i, the thinned map is matched to the human
   boundaries B_i within 0.0075 of the image diagonal
   (`jhseg.hierarchy.matching`: by default the official cost model solved
   exactly; Higra's matcher on request). Counts per threshold:
     cntR = sum_i |matched pixels of B_i|,  sumR = sum_i |B_i|,
     cntP = |union_i matched machine pixels|, sumP = |machine pixels|.
4. Dataset reduction (`collect_eval_bdry.m`): recall R = cntR / sumR and
   precision P = cntP / sumP per threshold (0/0 := 0), F = 2PR / (P + R).
   ODS: the best F along the piecewise-linear interpolation of (t, R, P)
   between consecutive thresholds (100 steps per segment) of the summed
   counts. OIS: per image, the last threshold of maximal F; their counts are
   summed before computing R, P, F. AP: precision linearly interpolated at
   recall 0:0.01:1 over the unique recall values (0 outside their range),
   summed times 0.01.

Speed (`bench/metrics.py`): consecutive thresholds often give the same binary
map (UCMs have few distinct levels); matching depends only on the thinned map,
so each distinct thinned map is matched once per annotator. The results are
bit-identical to one match per threshold and annotator with the same matcher.
"""
import dataclasses
from typing import Iterable, Sequence

import numpy as np

from jhseg.hierarchy import matching

DEFAULT_NUM_THRESHOLDS = 99
DEFAULT_MAX_DISTANCE = matching.DEFAULT_MAX_DISTANCE


def bsds_thresholds(num_thresholds: int = DEFAULT_NUM_THRESHOLDS) -> np.ndarray:
  """The official thresholds: linspace(1/(T+1), 1-1/(T+1), T); 0.5 when T = 1."""
  if num_thresholds < 1:
    raise ValueError(f"num_thresholds must be >= 1, got {num_thresholds}")
  if num_thresholds == 1:
    return np.array([0.5])
  return np.linspace(1 / (num_thresholds + 1), 1 - 1 / (num_thresholds + 1), num_thresholds)


def boundaries_from_segmentation(segmentation: np.ndarray) -> np.ndarray:
  """Image-size boundaries of a label map, as the official `seg2bdry(seg, 'imageSize')`.

  The official code draws the boundary edgels between 4-neighbours on the
  double-size grid and keeps its even "corner" points: pixel (i, j) stands for
  the corner below-right of it and is on if any of the four edgels meeting there
  separates different labels. The last row keeps only horizontal edgels, the
  last column only vertical ones, and the bottom-right pixel is always off.
  The release's `groundTruth{k}.Boundaries` equal `thin` of this map.
  """
  seg = np.asarray(segmentation)
  if seg.ndim != 2:
    raise ValueError(f"segmentation must be 2-D, got shape {seg.shape}")
  # h[i, j]: labels differ across the edge (i, j)-(i, j+1); v[i, j]: (i, j)-(i+1, j).
  h = np.zeros(seg.shape, bool)
  h[:, :-1] = seg[:, :-1] != seg[:, 1:]
  v = np.zeros(seg.shape, bool)
  v[:-1, :] = seg[:-1, :] != seg[1:, :]
  out = np.zeros(seg.shape, bool)
  out[:-1, :-1] = h[:-1, :-1] | h[1:, :-1] | v[:-1, :-1] | v[:-1, 1:]
  out[-1, :-1] = h[-1, :-1]
  out[:-1, -1] = v[:-1, -1]
  return out


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
  """Deletion tables of the two sub-iterations of MATLAB's `bwmorph(.., 'thin')`.

  MATLAB documents 'thin' as Algorithm A1 of Lam, Lee & Suen, "Thinning
  methodologies -- a comprehensive survey", PAMI 1992 (the Guo-Hall parallel
  algorithm). Neighbours x1..x8 go counter-clockwise from East (x1 = E,
  x2 = NE, x3 = N, ..., x8 = SE); bit k-1 of the table index holds x_k.
  A pixel is deleted in sub-iteration 1 iff G1, G2, G3 hold, in sub-iteration
  2 iff G1, G2, G3' hold:
    G1: X_H = sum_{i=1..4} [not x_{2i-1} and (x_{2i} or x_{2i+1})] = 1,
    G2: 2 <= min(n1, n2) <= 3, n1 = sum_k (x_{2k-1} or x_{2k}),
        n2 = sum_k (x_{2k} or x_{2k+1}),
    G3: (x2 or x3 or not x8) and x1 is false,
    G3': (x6 or x7 or not x4) and x5 is false.
  """
  first = np.zeros(256, bool)
  second = np.zeros(256, bool)
  for code in range(256):
    x = [None] + [bool((code >> k) & 1) for k in range(8)] + [bool(code & 1)]  # x[9] = x1
    crossing = sum((not x[2 * i - 1]) and (x[2 * i] or x[2 * i + 1]) for i in range(1, 5))
    n1 = sum(x[2 * k - 1] or x[2 * k] for k in range(1, 5))
    n2 = sum(x[2 * k] or x[2 * k + 1] for k in range(1, 5))
    g12 = crossing == 1 and 2 <= min(n1, n2) <= 3
    first[code] = g12 and not ((x[2] or x[3] or not x[8]) and x[1])
    second[code] = g12 and not ((x[6] or x[7] or not x[4]) and x[5])
  first.flags.writeable = False
  second.flags.writeable = False
  return first, second


_THIN_FIRST, _THIN_SECOND = _thinning_tables()
# (row, column) offsets of x1..x8.
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _neighbour_codes(bmap: np.ndarray) -> np.ndarray:
  h, w = bmap.shape
  padded = np.pad(bmap, 1).astype(np.uint8)
  codes = np.zeros(bmap.shape, np.uint8)
  for bit, (di, dj) in enumerate(_NEIGHBOURS):
    codes |= padded[1 + di:1 + di + h, 1 + dj:1 + dj + w] << np.uint8(bit)
  return codes


def thin(bmap: np.ndarray) -> np.ndarray:
  """Thins a binary map to one-pixel-wide curves: MATLAB `bwmorph(bmap, 'thin', Inf)`.

  Both sub-iterations are applied in parallel (each decides on the map as it
  was at the start of the sub-iteration) until nothing changes; pixels outside
  the image count as background. Reproduces the release's ground-truth
  `Boundaries` from their segmentations exactly (see the tests).
  """
  out = np.array(bmap, dtype=bool)
  if out.ndim != 2:
    raise ValueError(f"bmap must be 2-D, got shape {out.shape}")
  while True:
    changed = False
    for table in (_THIN_FIRST, _THIN_SECOND):
      rows, cols = np.nonzero(out)
      if rows.size == 0:
        return out
      delete = table[_neighbour_codes(out)[rows, cols]]
      if delete.any():
        out[rows[delete], cols[delete]] = False
        changed = True
    if not changed:
      return out


@dataclasses.dataclass(frozen=True)
class BoundaryCounts:
  """Per-image sufficient statistics, one entry per threshold (the `_ev1.txt` file)."""
  thresholds: np.ndarray
  cnt_r: np.ndarray
  sum_r: np.ndarray
  cnt_p: np.ndarray
  sum_p: np.ndarray


def _match_counts(thinned: np.ndarray, truths: Sequence[np.ndarray], max_distance: float,
                  matcher: str) -> tuple[int, int, int, int]:
  matched_machine = np.zeros(thinned.shape, bool)
  cnt_r = sum_r = 0
  for truth in truths:
    mm, mt = matching.match_boundary_pixels(thinned, truth, max_distance=max_distance, matcher=matcher)
    matched_machine |= mm
    cnt_r += int(mt.sum())
    sum_r += int(truth.sum())
  return cnt_r, sum_r, int(matched_machine.sum()), int(thinned.sum())


def counts_from_binary_maps(
    bmaps: Iterable[np.ndarray],
    truths: Sequence[np.ndarray],
    thresholds: Sequence[float],
    *,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    thin_maps: bool = True,
    reuse_identical: bool = True,
    matcher: str = matching.DEFAULT_MATCHER,
) -> BoundaryCounts:
  """Boundary counts for one binary map per threshold.

  Args:
    bmaps: one HxW binary machine map per threshold (an iterable; the same
      array object repeated counts as identical without re-thinning).
    truths: the annotators' boundary maps (the release's `Boundaries`).
    thresholds: the threshold values reported with the counts.
    max_distance: matching distance as a fraction of the image diagonal.
    thin_maps: thin each binary map first (the official default).
    reuse_identical: match each distinct thinned map only once. Disable to get
      the naive loop (one match per threshold and annotator); results are the
      same.
    matcher: pixel matcher, a name in `jhseg.hierarchy.matching.MATCHERS`.
  """
  truths = [np.asarray(t, bool) for t in truths]
  rows = []
  cache: dict[bytes, tuple[int, int, int, int]] = {}
  last_input, last_row = None, None
  for bmap in bmaps:
    if reuse_identical and bmap is last_input:
      rows.append(last_row)
      continue
    bmap = np.asarray(bmap, bool)
    if truths and bmap.shape != truths[0].shape:
      raise ValueError(f"machine map shape {bmap.shape} differs from ground truth shape {truths[0].shape}")
    thinned = thin(bmap) if thin_maps else bmap
    key = np.packbits(thinned).tobytes()
    if reuse_identical and key in cache:
      row = cache[key]
    else:
      row = _match_counts(thinned, truths, max_distance, matcher)
      if reuse_identical:
        cache[key] = row
    rows.append(row)
    last_input, last_row = bmap, row
  counts = np.array(rows, np.int64).reshape(-1, 4)
  thresholds = np.asarray(thresholds, np.float64)
  if len(thresholds) != len(counts):
    raise ValueError(f"{len(counts)} binary maps but {len(thresholds)} thresholds")
  return BoundaryCounts(thresholds, *counts.T)


def counts_from_soft_map(
    pb: np.ndarray,
    truths: Sequence[np.ndarray],
    *,
    num_thresholds: int = DEFAULT_NUM_THRESHOLDS,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    thin_maps: bool = True,
    reuse_identical: bool = True,
    matcher: str = matching.DEFAULT_MATCHER,
) -> BoundaryCounts:
  """Boundary counts of a soft boundary map `pb` (HxW, in [0, 1]) at the official thresholds."""
  pb = np.asarray(pb, np.float64)
  thresholds = bsds_thresholds(num_thresholds)
  if not reuse_identical:
    bmaps = (pb >= t for t in thresholds)
  else:
    # pb >= t only changes when a value of pb lies between two thresholds.
    levels = np.unique(pb)
    buckets = np.searchsorted(levels, thresholds, side="left")
    distinct = {b: None for b in buckets}

    def generate():
      for b, t in zip(buckets, thresholds):
        if distinct[b] is None:
          distinct[b] = pb >= t
        yield distinct[b]
    bmaps = generate()
  return counts_from_binary_maps(bmaps, truths, thresholds, max_distance=max_distance, thin_maps=thin_maps,
                                 reuse_identical=reuse_identical, matcher=matcher)


def counts_from_ucm2(ucm2: np.ndarray, truths: Sequence[np.ndarray], **kwargs) -> BoundaryCounts:
  """Boundary counts of a BSDS double-size UCM: the soft map `ucm2[2::2, 2::2]`."""
  ucm2 = np.asarray(ucm2)
  return counts_from_soft_map(ucm2[2::2, 2::2], truths, **kwargs)


def counts_from_segmentations(
    segmentations: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    *,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    thin_maps: bool = True,
    reuse_identical: bool = True,
    matcher: str = matching.DEFAULT_MATCHER,
) -> BoundaryCounts:
  """Boundary counts of a list of segmentations: thresholds 1..S, one per segmentation."""
  bmaps = (boundaries_from_segmentation(s) for s in segmentations)
  return counts_from_binary_maps(bmaps, truths, np.arange(1, len(segmentations) + 1), max_distance=max_distance,
                                 thin_maps=thin_maps, reuse_identical=reuse_identical, matcher=matcher)


# ----------------------------------------------------------------------------- dataset reduction


def f_measure(recall, precision):
  """2PR / (P + R), 0 when P + R = 0 (as the official `fmeasure`)."""
  recall = np.asarray(recall, np.float64)
  precision = np.asarray(precision, np.float64)
  total = precision + recall
  return 2 * precision * recall / (total + (total == 0))


def _ratio(count, total):
  count = np.asarray(count, np.float64)
  total = np.asarray(total, np.float64)
  return count / (total + (total == 0))


def interpolated_max_f(thresholds, recall, precision) -> tuple[float, float, float, float]:
  """Best (t, R, P, F) along the linear interpolation between consecutive thresholds.

  As the official `maxF`: start from the first threshold, then for each
  segment try d = linspace(0, 1, 100) and keep a point only if its F is
  strictly larger, so ties go to the earliest point.
  """
  t = np.asarray(thresholds, np.float64)
  r = np.asarray(recall, np.float64)
  p = np.asarray(precision, np.float64)
  best = (t[0], r[0], p[0], float(f_measure(r[0], p[0])))
  if len(t) < 2:
    return best
  d = np.linspace(0, 1, 100)[None, :]
  ti = t[1:, None] * d + t[:-1, None] * (1 - d)
  ri = r[1:, None] * d + r[:-1, None] * (1 - d)
  pi = p[1:, None] * d + p[:-1, None] * (1 - d)
  fi = f_measure(ri, pi).ravel()
  k = int(np.argmax(fi))  # first occurrence of the maximum, as a strict '>' scan
  if fi[k] > best[3]:
    best = (ti.ravel()[k], ri.ravel()[k], pi.ravel()[k], fi[k])
  return tuple(float(v) for v in best)


def average_precision(recall, precision) -> float:
  """The official AP: precision interpolated at recall 0:0.01:1, times 0.01.

  `[Ru, i] = unique(R); interp1(Ru, P(i), 0:0.01:1)` with NaN (outside the
  recall range) set to 0; 0 when fewer than two distinct recalls. MATLAB
  versions of the time (before R2013a) return the *last* index of each
  repeated value from `unique`; the official outputs agree with that choice.
  """
  r = np.asarray(recall, np.float64)
  p = np.asarray(precision, np.float64)
  r_unique, first_of_reversed = np.unique(r[::-1], return_index=True)
  if r_unique.size < 2:
    return 0.0
  p_unique = p[len(r) - 1 - first_of_reversed]
  grid = np.linspace(0, 1, 101)
  interpolated = np.interp(grid, r_unique, p_unique)
  interpolated[(grid < r_unique[0]) | (grid > r_unique[-1])] = 0.0
  return float(interpolated.sum() * 0.01)


@dataclasses.dataclass(frozen=True)
class BoundaryResult:
  """Dataset-level boundary benchmark (what `collect_eval_bdry.m` writes).

  Attributes:
    thresholds, recall, precision, f: per threshold, from the summed counts
      (`eval_bdry_thr.txt`).
    ods_threshold, ods_recall, ods_precision, ods_f: optimal dataset scale,
      interpolated between thresholds.
    ois_recall, ois_precision, ois_f: optimal image scale.
    ap: average precision.
    per_image: (N, 4) best threshold, recall, precision, F per image
      (interpolated like ODS; `eval_bdry_img.txt`).
  """
  thresholds: np.ndarray
  recall: np.ndarray
  precision: np.ndarray
  f: np.ndarray
  ods_threshold: float
  ods_recall: float
  ods_precision: float
  ods_f: float
  ois_recall: float
  ois_precision: float
  ois_f: float
  ap: float
  per_image: np.ndarray

  def summary(self) -> dict[str, float]:
    return {k: getattr(self, k) for k in ("ods_threshold", "ods_recall", "ods_precision", "ods_f", "ois_recall",
                                           "ois_precision", "ois_f", "ap")}


def collect_boundary_counts(counts: Sequence[BoundaryCounts]) -> BoundaryResult:
  """Reduces per-image counts as the official `collect_eval_bdry.m`."""
  if not counts:
    raise ValueError("no images to collect")
  thresholds = counts[0].thresholds
  for k, c in enumerate(counts):
    if c.thresholds.shape != thresholds.shape or not np.allclose(c.thresholds, thresholds):
      raise ValueError(f"image {k + 1} has thresholds {c.thresholds}, expected {thresholds} (as image 1)")
  totals = np.zeros((4, len(thresholds)), np.int64)
  ois = np.zeros(4, np.int64)
  per_image = []
  for c in counts:
    stack = np.stack([c.cnt_r, c.sum_r, c.cnt_p, c.sum_p])
    totals += stack
    r, p = _ratio(c.cnt_r, c.sum_r), _ratio(c.cnt_p, c.sum_p)
    per_image.append(interpolated_max_f(thresholds, r, p))
    f = f_measure(r, p)
    ois += stack[:, np.flatnonzero(f == f.max())[-1]]  # the last best threshold, as `ff(end)`
  recall, precision = _ratio(totals[0], totals[1]), _ratio(totals[2], totals[3])
  ods = interpolated_max_f(thresholds, recall, precision)
  ois_r, ois_p = float(_ratio(ois[0], ois[1])), float(_ratio(ois[2], ois[3]))
  return BoundaryResult(
      thresholds=np.asarray(thresholds, np.float64), recall=recall, precision=precision,
      f=f_measure(recall, precision), ods_threshold=ods[0], ods_recall=ods[1], ods_precision=ods[2],
      ods_f=ods[3], ois_recall=ois_r, ois_precision=ois_p, ois_f=float(f_measure(ois_r, ois_p)),
      ap=average_precision(recall, precision), per_image=np.array(per_image, np.float64).reshape(-1, 4))


class BoundaryBenchmark:
  """Accumulates per-image counts (`add`) and reduces them (`result`), as `collect_eval_bdry.m`."""

  def __init__(self):
    self._counts: list[BoundaryCounts] = []

  def add(self, counts: BoundaryCounts) -> None:
    self._counts.append(counts)

  def result(self) -> BoundaryResult:
    return collect_boundary_counts(self._counts)
