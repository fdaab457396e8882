"""BSDS500 region benchmark: segmentation covering, PRI and VOI.

Protocol of the official benchmark (Arbelaez, Maire, Fowlkes & Malik, PAMI
2011, BSR `bench/`: `evaluation_reg_image.m`, `collect_eval_reg.m`):

- Segmentations: a UCM in `ucm2` format gives, at each threshold t_k
  (`jhseg.metrics.boundary.bsds_thresholds`), the 4-connected components of
  `ucm2 <= t_k` read at the pixel positions `[1::2, 1::2]`; a list of
  segmentations is used as is with thresholds 1..S.
- Covering. For each human segmentation G_s (K annotators) and machine
  segmentation S, overlap(R, R') = |R & R'| / |R | R'|. Per threshold:
    cntR = sum_{s, R in G_s} |R| max_{R' in S} overlap(R, R'),  sumR = K N,
    cntP = sum_{R' in S} |R'| max_{s, R in G_s} overlap(R, R'),  sumP = N,
  and cntR_best uses, for every human region, its best overlap over all
  thresholds. Dataset: covering(t) = sum cntR / sum sumR; ODS = its maximum
  (first threshold on ties); OIS sums each image's counts at its last best
  threshold; "best" = sum cntR_best / sum sumR. Label 0 is not a region (as
  the official code, which drops row and column 0 of the overlap table).
- Probabilistic Rand index and variation of information, averaged over the
  annotators, from the contingency table n of S and G_s:
    PRI = 1 - (sum_u a_u^2 / 2 + sum_v b_v^2 / 2 - sum_uv n_uv^2) / (N (N-1) / 2)
    VOI = H(S) + H(G) - 2 I(S, G),  in bits (log2),
  with a, b the marginals. Dataset: mean over images per threshold; ODS is the
  best mean (max PRI, min VOI; first on ties), OIS the mean of per-image bests.
  No interpolation between thresholds in the region benchmark.

For a UCM, thresholds between two consecutive levels of the map give the same
segmentation, so each distinct segmentation is labelled and scored once.
"""
import dataclasses
from typing import Iterable, Sequence

import numpy as np
import scipy.ndimage

from jhseg.metrics import boundary

_FOUR_CONNECTIVITY = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def segmentations_from_ucm2(ucm2: np.ndarray, thresholds: Sequence[float]) -> list[np.ndarray]:
  """Label maps of a `ucm2` at each threshold: components of `ucm2 <= t` at pixel positions.

  Identical segmentations (no level of the map between two thresholds) are
  returned as the same array object.
  """
  ucm2 = np.asarray(ucm2, np.float64)
  if ucm2.ndim != 2 or ucm2.shape[0] % 2 != 1 or ucm2.shape[1] % 2 != 1:
    raise ValueError(f"ucm2 must be (2H+1)x(2W+1), got shape {ucm2.shape}")
  levels = np.unique(ucm2)
  buckets = np.searchsorted(levels, np.asarray(thresholds, np.float64), side="right")
  by_bucket: dict[int, np.ndarray] = {}
  out = []
  for bucket, t in zip(buckets, thresholds):
    if bucket not in by_bucket:
      labels, _ = scipy.ndimage.label(ucm2 <= t, structure=_FOUR_CONNECTIVITY)
      by_bucket[bucket] = labels[1::2, 1::2].astype(np.int32)
    out.append(by_bucket[bucket])
  return out


def _dense_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
  """Relabels to 0..n keeping 0 as the non-region label; returns (labels, n)."""
  flat = labels.ravel()
  if flat.size and flat.min() >= 0 and flat.max() < 4 * flat.size:
    # Non-negative labels: rank the present ones with a bincount (no sort of the pixels).
    present = np.bincount(flat) > 0
    present[0] = False
    rank = np.cumsum(present)  # label v -> number of present positive labels <= v; 0 -> 0
    n = int(rank[-1])
    if n == len(present) - 1:  # already 1..n
      return labels, n
    return rank[labels], n
  values, inverse = np.unique(labels, return_inverse=True)
  if values[0] != 0:
    return (inverse + 1).reshape(labels.shape), len(values)
  return inverse.reshape(labels.shape), len(values) - 1


def contingency(a: np.ndarray, num_a: int, b: np.ndarray, num_b: int) -> np.ndarray:
  """(num_a+1) x (num_b+1) table of pixel counts of label pairs (labels 0..num)."""
  index = a.astype(np.int64).ravel() * (num_b + 1) + b.ravel()
  return np.bincount(index, minlength=(num_a + 1) * (num_b + 1)).reshape(num_a + 1, num_b + 1)


def rand_index(table: np.ndarray) -> float:
  """The official (probabilistic) Rand index of one contingency table."""
  n = table.astype(np.float64)
  total = n.sum()
  pairs = total * (total - 1) / 2
  a = n.sum(axis=1)
  b = n.sum(axis=0)
  return float(1 - ((a * a).sum() / 2 + (b * b).sum() / 2 - (n * n).sum()) / pairs)


def variation_of_information(table: np.ndarray) -> float:
  """VOI = H(A) + H(B) - 2 I(A, B) in bits, of one contingency table."""
  joint = table.astype(np.float64) / table.sum()
  pa = joint.sum(axis=1)
  pb = joint.sum(axis=0)
  entropy = lambda p: -np.sum(p[p > 0] * np.log2(p[p > 0]))
  nz = joint > 0
  outer = np.outer(pa, pb)
  mutual = np.sum(joint[nz] * np.log2(joint[nz] / outer[nz]))
  return float(entropy(pa) + entropy(pb) - 2 * mutual)


@dataclasses.dataclass(frozen=True)
class RegionCounts:
  """Per-image sufficient statistics (the official `_ev2/_ev3/_ev4.txt` files)."""
  thresholds: np.ndarray
  cnt_r: np.ndarray
  sum_r: np.ndarray
  cnt_p: np.ndarray
  sum_p: np.ndarray
  cnt_r_best: float
  pri: np.ndarray
  voi: np.ndarray


def region_counts(
    segmentations: Iterable[np.ndarray],
    truths: Sequence[np.ndarray],
    thresholds: Sequence[float],
) -> RegionCounts:
  """Covering, PRI and VOI statistics of one image.

  Args:
    segmentations: one HxW label map per threshold (repeated array objects are
      scored once).
    truths: the annotators' HxW label maps.
    thresholds: the thresholds reported with the counts.
  """
  gts = [_dense_labels(np.asarray(g)) for g in truths]
  gt_areas = [np.bincount(g.ravel(), minlength=n + 1)[1:] for g, n in gts]
  all_gt_areas = np.concatenate(gt_areas).astype(np.float64)
  best_gt = np.zeros(len(all_gt_areas))
  rows = []
  last_seg, last_row = None, None
  for seg in segmentations:
    if seg is last_seg:
      rows.append(last_row)
      continue
    last_seg = seg
    seg_dense, num_seg = _dense_labels(np.asarray(seg))
    if seg_dense.shape != gts[0][0].shape:
      raise ValueError(f"segmentation shape {seg_dense.shape} differs from ground truth {gts[0][0].shape}")
    overlaps, pri, voi = [], 0.0, 0.0
    for g, num_g in gts:
      table = contingency(g, num_g, seg_dense, num_seg)
      pri += rand_index(table)
      voi += variation_of_information(table)
      inter = table[1:, 1:].astype(np.float64)
      union = table.sum(axis=1)[1:, None] + table.sum(axis=0)[None, 1:] - inter
      overlaps.append(np.divide(inter, union, out=np.zeros_like(inter), where=union > 0))
    overlaps = np.concatenate(overlaps, axis=0)  # all human regions x machine regions
    seg_areas = np.bincount(seg_dense.ravel(), minlength=num_seg + 1)[1:].astype(np.float64)
    best_for_gt = overlaps.max(axis=1) if num_seg else np.zeros(len(all_gt_areas))
    best_for_seg = overlaps.max(axis=0) if len(all_gt_areas) else np.zeros(num_seg)
    best_gt = np.maximum(best_gt, best_for_gt)
    last_row = (float(all_gt_areas @ best_for_gt), float(all_gt_areas.sum()), float(seg_areas @ best_for_seg),
                float(seg_areas.sum()), pri / len(gts), voi / len(gts))
    rows.append(last_row)
  table = np.array(rows, np.float64).reshape(-1, 6)
  thresholds = np.asarray(thresholds, np.float64)
  if len(thresholds) != len(table):
    raise ValueError(f"{len(table)} segmentations but {len(thresholds)} thresholds")
  return RegionCounts(thresholds, *table[:, :4].T, float(all_gt_areas @ best_gt), table[:, 4], table[:, 5])


def region_counts_from_ucm2(ucm2: np.ndarray, truths: Sequence[np.ndarray], *,
                            num_thresholds: int = boundary.DEFAULT_NUM_THRESHOLDS) -> RegionCounts:
  """Region statistics of a `ucm2` at the official thresholds."""
  thresholds = boundary.bsds_thresholds(num_thresholds)
  return region_counts(segmentations_from_ucm2(ucm2, thresholds), truths, thresholds)


def region_counts_from_segmentations(segmentations: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> RegionCounts:
  """Region statistics of a list of segmentations, thresholds 1..S."""
  return region_counts(segmentations, truths, np.arange(1, len(segmentations) + 1))


@dataclasses.dataclass(frozen=True)
class RegionResult:
  """Dataset-level region benchmark (what `collect_eval_reg.m` writes).

  Attributes:
    thresholds, covering, pri, voi: per threshold (`eval_cover_th.txt`,
      `eval_RI_VOI_thr.txt`).
    covering_ods_threshold, covering_ods, covering_ois, covering_best:
      `eval_cover.txt`.
    pri_ods_threshold, pri_ods, pri_ois, voi_ods_threshold, voi_ods, voi_ois:
      `eval_RI_VOI.txt`.
    covering_per_image: (N, 3) per image: the (first) threshold of best
      covering, that covering, and the reverse covering cntP / sumP (machine
      regions by human regions) at that threshold -- what the official
      `eval_cover_img.txt` holds in its last column (checked against the
      official outputs; it is not the per-image best covering).
  """
  thresholds: np.ndarray
  covering: np.ndarray
  pri: np.ndarray
  voi: np.ndarray
  covering_ods_threshold: float
  covering_ods: float
  covering_ois: float
  covering_best: float
  pri_ods_threshold: float
  pri_ods: float
  pri_ois: float
  voi_ods_threshold: float
  voi_ods: float
  voi_ois: float
  covering_per_image: np.ndarray

  def summary(self) -> dict[str, float]:
    return {k: getattr(self, k) for k in (
        "covering_ods_threshold", "covering_ods", "covering_ois", "covering_best", "pri_ods_threshold", "pri_ods",
        "pri_ois", "voi_ods_threshold", "voi_ods", "voi_ois")}


def _ratio(count, total):
  count = np.asarray(count, np.float64)
  total = np.asarray(total, np.float64)
  return count / (total + (total == 0))


def collect_region_counts(counts: Sequence[RegionCounts]) -> RegionResult:
  """Reduces per-image region statistics as the official `collect_eval_reg.m`."""
  if not counts:
    raise ValueError("no images to collect")
  thresholds = counts[0].thresholds
  for k, c in enumerate(counts):
    if c.thresholds.shape != thresholds.shape or not np.allclose(c.thresholds, thresholds):
      raise ValueError(f"image {k + 1} has thresholds {c.thresholds}, expected {thresholds} (as image 1)")
  cnt_r = sum(c.cnt_r for c in counts)
  sum_r = sum(c.sum_r for c in counts)
  ois_cnt = ois_sum = best_cnt = 0.0
  per_image = []
  for c in counts:
    r = _ratio(c.cnt_r, c.sum_r)
    first_best = int(np.argmax(r))
    last_best = int(np.flatnonzero(r == r.max())[-1])
    ois_cnt += c.cnt_r[last_best]
    ois_sum += c.sum_r[last_best]
    best_cnt += c.cnt_r_best
    per_image.append((thresholds[first_best], r[first_best], _ratio(c.cnt_p[first_best], c.sum_p[first_best])))
  covering = _ratio(cnt_r, sum_r)
  ods = int(np.argmax(covering))
  pri = np.mean([c.pri for c in counts], axis=0)
  voi = np.mean([c.voi for c in counts], axis=0)
  pri_ods, voi_ods = int(np.argmax(pri)), int(np.argmin(voi))
  return RegionResult(
      thresholds=np.asarray(thresholds, np.float64), covering=covering, pri=pri, voi=voi,
      covering_ods_threshold=float(thresholds[ods]), covering_ods=float(covering[ods]),
      covering_ois=float(_ratio(ois_cnt, ois_sum)), covering_best=float(_ratio(best_cnt, ois_sum)),
      pri_ods_threshold=float(thresholds[pri_ods]), pri_ods=float(pri[pri_ods]),
      pri_ois=float(np.mean([c.pri.max() for c in counts])),
      voi_ods_threshold=float(thresholds[voi_ods]), voi_ods=float(voi[voi_ods]),
      voi_ois=float(np.mean([c.voi.min() for c in counts])),
      covering_per_image=np.array(per_image, np.float64).reshape(-1, 3))


class RegionBenchmark:
  """Accumulates per-image statistics (`add`) and reduces them (`result`), as `collect_eval_reg.m`."""

  def __init__(self):
    self._counts: list[RegionCounts] = []

  def add(self, counts: RegionCounts) -> None:
    self._counts.append(counts)

  def result(self) -> RegionResult:
    return collect_region_counts(self._counts)
