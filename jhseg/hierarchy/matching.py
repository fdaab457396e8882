"""Boundary pixel matching of the BSDS benchmark.

The BSDS boundary benchmark (Martin, Fowlkes & Malik, PAMI 2004; Arbelaez et
al., PAMI 2011) matches each machine boundary pixel to at most one human
boundary pixel no farther than `r = max_distance * diagonal` (official
`correspondPixels`). Two exact, deterministic matchers, by name in `MATCHERS`:

- "bsds" (default): the official cost model. `correspondPixels` solves a
  perfect assignment between (machine pixels + outlier nodes) and (human
  pixels + outlier nodes) where real pairs cost rint(100 d_ij) and every edge
  touching an outlier costs ow = ceil(100 * 100 r) (outlierCost = 100 r, cost
  multiplier 100). With k matched pairs out of n1 machine and n2 human pixels
  that is
    sum_{matched (i, j)} rint(100 d_ij) + ow * (n1 + n2 - k),
  so each match gains ow - rint(100 d) > 0. Here the assignment is built with one outlier mirror
  per pixel (a matched pair frees its two mirrors, which are then paired with
  each other at cost ow) and solved exactly by SciPy's sparse Jonker-Volgenant
  solver (`scipy.sparse.csgraph.min_weight_full_bipartite_matching`). The
  official code instead wires outliers with random sparse edges, so its
  matchings vary by a few pixels from run to run (the sample's official
  outputs disagree with one another by up to 1.1e-3 per image); this matcher
  is that objective without the randomness.
- "higra": Higra's `match_pixels_image_2d` (a reimplementation of
  `correspondPixels` with the CSA solver): maximum cardinality first, then
  minimum total cost floor(1000 d). Two to three times slower
  (`bench/metrics.py`).

Both give the same number of matched pixels on the official sample; which
machine pixels are matched can differ between equal-cost matchings, which
moves precision by ~1e-4 (ODS F by < 1e-4 on the sample at 99 thresholds).
Both reproduce the official sample's dataset-level outputs within 7e-4.
"""
from typing import Callable

import higra as hg
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

# Official BSDS benchmark default: 0.75% of the image diagonal.
DEFAULT_MAX_DISTANCE = 0.0075
# correspondPixels' constants: outlier cost as a multiple of the matching radius, integer cost scale.
OUTLIER_COST = 100.0
COST_MULTIPLIER = 100.0


def _check(machine, truth) -> tuple[np.ndarray, np.ndarray]:
  machine = np.asarray(machine)
  truth = np.asarray(truth)
  if machine.ndim != 2 or machine.shape != truth.shape:
    raise ValueError(
        f"machine and truth must be 2-D maps of the same shape, got {machine.shape} and {truth.shape}")
  return machine.astype(bool), truth.astype(bool)


def _radius(shape: tuple[int, int], max_distance: float) -> float:
  return max_distance * float(np.hypot(*shape))


def _offsets_within(radius: float) -> tuple[np.ndarray, np.ndarray]:
  """Integer offsets (dy, dx) of length <= radius, nearest first, and their lengths."""
  r = int(np.floor(radius))
  dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
  keep = dy * dy + dx * dx <= radius * radius
  dy, dx = dy[keep], dx[keep]
  order = np.argsort(dy * dy + dx * dx, kind="stable")
  return np.stack([dy[order], dx[order]], axis=1), np.hypot(dy[order], dx[order])


def matchable_pairs(machine: np.ndarray, truth: np.ndarray, radius: float):
  """All (machine pixel, human pixel, distance) pairs with distance <= radius.

  Returns linear pixel indices `(machine_index, truth_index)` and distances.
  """
  h, w = machine.shape
  offsets, lengths = _offsets_within(radius)
  pad = int(np.floor(radius))
  padded_w = w + 2 * pad
  padded = np.pad(truth, pad).ravel()  # no bounds checks: out-of-image neighbours read the zero pad
  ym, xm = np.nonzero(machine)
  candidates = ((ym + pad) * padded_w + (xm + pad))[:, None] + (offsets[:, 0] * padded_w + offsets[:, 1])[None, :]
  rows, cols = np.nonzero(padded[candidates])
  hits = candidates[rows, cols]
  return ym[rows] * w + xm[rows], (hits // padded_w - pad) * w + (hits % padded_w - pad), lengths[cols]


def match_bsds(machine, truth, *, max_distance: float = DEFAULT_MAX_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
  """The official correspondPixels objective, solved exactly (see the module docstring)."""
  machine, truth = _check(machine, truth)
  matched_machine = np.zeros(machine.shape, bool)
  matched_truth = np.zeros(truth.shape, bool)
  radius = _radius(machine.shape, max_distance)
  m_pix, t_pix, dist = matchable_pairs(machine, truth, radius)
  if m_pix.size == 0:
    return matched_machine, matched_truth
  # Pairs come grouped by machine pixel in raster order, so its node ids are a running count.
  first = np.concatenate([[True], m_pix[1:] != m_pix[:-1]])
  m_nodes, src = m_pix[first], np.cumsum(first) - 1
  t_nodes, tgt = np.unique(t_pix, return_inverse=True)
  n1, n2, m = len(m_nodes), len(t_nodes), len(src)
  outlier = np.ceil(OUTLIER_COST * radius * COST_MULTIPLIER)
  # Rows: machine pixels, then the human pixels' outlier mirrors; columns: human pixels, then the
  # machine pixels' mirrors. Mirror-mirror edges exist for the matchable pairs, so any matching of
  # real pixels completes to a perfect matching; its cost is sum rint(100 d) + ow * #unmatched.
  rows = np.concatenate([src, np.arange(n1), n1 + np.arange(n2), n1 + tgt])
  cols = np.concatenate([tgt, n2 + np.arange(n1), np.arange(n2), n2 + src])
  costs = np.concatenate([np.rint(dist * COST_MULTIPLIER), np.full(n1 + n2 + m, outlier)])
  # +1 on every edge: SciPy drops explicit zeros, and a perfect matching has n1 + n2 edges either way.
  graph = scipy.sparse.csr_matrix((costs + 1, (rows, cols)), shape=(n1 + n2, n1 + n2))
  row_ind, col_ind = scipy.sparse.csgraph.min_weight_full_bipartite_matching(graph)
  real = (row_ind < n1) & (col_ind < n2)
  matched_machine.flat[m_nodes[row_ind[real]]] = True
  matched_truth.flat[t_nodes[col_ind[real]]] = True
  return matched_machine, matched_truth


def match_higra(machine, truth, *, max_distance: float = DEFAULT_MAX_DISTANCE) -> tuple[np.ndarray, np.ndarray]:
  """Higra's `match_pixels_image_2d`: maximum cardinality, then minimum total distance."""
  machine, truth = _check(machine, truth)
  if not _has_pair_at_positive_distance(machine, truth, _radius(machine.shape, max_distance)):
    # Only coincident pixels are matchable: each pixel has at most one candidate, so the matching is
    # their intersection. (Higra's CSA solver crashes when every edge costs 0.)
    both = machine & truth
    return both, both.copy()
  matched_machine = np.zeros(machine.shape, bool)
  matched_truth = np.zeros(truth.shape, bool)
  sources, targets = hg.match_pixels_image_2d(
      machine.astype(np.uint8), truth.astype(np.uint8), max_distance, "relative")
  matched_machine.flat[np.asarray(sources, np.int64)] = True
  matched_truth.flat[np.asarray(targets, np.int64)] = True
  return matched_machine, matched_truth


def _has_pair_at_positive_distance(machine: np.ndarray, truth: np.ndarray, radius: float) -> bool:
  """Whether some machine pixel has a human pixel at distance in (0, radius]."""
  h, w = machine.shape
  offsets, lengths = _offsets_within(radius)
  for (dy, dx), length in zip(offsets.tolist(), lengths):
    if length == 0:
      continue
    a = machine[max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    b = truth[max(0, dy):h - max(0, -dy), max(0, dx):w - max(0, -dx)]
    if np.any(a & b):
      return True
  return False


MATCHERS: dict[str, Callable[..., tuple[np.ndarray, np.ndarray]]] = {
    "bsds": match_bsds,
    "higra": match_higra,
}
DEFAULT_MATCHER = "bsds"


def match_boundary_pixels(
    machine: np.ndarray,
    truth: np.ndarray,
    *,
    max_distance: float = DEFAULT_MAX_DISTANCE,
    matcher: str = DEFAULT_MATCHER,
) -> tuple[np.ndarray, np.ndarray]:
  """Matches the boundary pixels of `machine` to those of `truth`.

  Args:
    machine: HxW boolean (or 0/1) boundary map.
    truth: HxW boolean (or 0/1) boundary map of the same shape.
    max_distance: largest matching distance, as a fraction of the image
      diagonal sqrt(H^2 + W^2) (pixels are matchable if their distance is at
      most that).
    matcher: a name in `MATCHERS` ("bsds": the official cost model, exact;
      "higra": Higra's max-cardinality min-cost matcher).

  Returns:
    `(matched_machine, matched_truth)`: HxW boolean maps of the pixels of each
    image that belong to the matching (as `correspondPixels`' `match1 > 0`,
    `match2 > 0`).
  """
  if matcher not in MATCHERS:
    raise ValueError(f"unknown matcher {matcher!r}; valid matchers: {', '.join(MATCHERS)}")
  return MATCHERS[matcher](machine, truth, max_distance=max_distance)
