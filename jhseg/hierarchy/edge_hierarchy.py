"""Region counts of the horizontal cuts of a hierarchy given as edge weights (h, v).

HSG's coherent regions (Ke et al., CVPR 2022) are the cut of an OWT-UCM reached by
raising a threshold until the partition has few enough regions. Counting the regions
of every candidate threshold with one hierarchy, instead of cutting once per
threshold, needs the tree: for the canonical binary partition tree (Kruskal) of the
4-adjacency pixel graph -- a connected graph -- every inner node merges exactly two
regions, so the cut at t (boundaries are the edges with weight > t, as in
`jhseg.hierarchy.cuts`) has

    n(t) = H * W - #{inner nodes with altitude <= t}

regions. This holds for any edge weights (their single-linkage hierarchy); for an
ultrametric it is the number of regions of its hierarchy at level t.
"""
from __future__ import annotations

import higra as hg
import numpy as np

from jhseg.hierarchy import pixel_graph


def _canonical_bpt(h, v, caller: str):
  h, v, shape = pixel_graph.check_edges(h, v, caller=caller)
  num_pixels = shape[0] * shape[1]
  weights = pixel_graph.to_flat(h, v, shape)
  if weights.size == 0:  # a single pixel: no tree needed
    return None, None, shape
  sources, targets = pixel_graph.fresh_graph(shape).edge_list()
  tree, altitudes = hg.bpt_canonical((sources, targets, num_pixels), weights)
  return tree, altitudes, shape


def _counts(tree, altitudes, shape, thresholds: np.ndarray) -> np.ndarray:
  num_pixels = shape[0] * shape[1]
  if tree is None:
    return np.ones(thresholds.shape, np.int64)
  inner = np.sort(np.asarray(altitudes, np.float64)[tree.num_leaves():])
  return num_pixels - np.searchsorted(inner, thresholds, side="right").astype(np.int64)


def _check_thresholds(thresholds, caller: str) -> np.ndarray:
  thresholds = np.asarray(thresholds, np.float64)
  if thresholds.ndim != 1 or thresholds.size == 0:
    raise ValueError(f"{caller}: argument `thresholds` must be a non-empty 1-D array; got shape "
                     f"{thresholds.shape}.")
  return thresholds


def num_regions_at_thresholds(h, v, thresholds) -> np.ndarray:
  """Number of regions of the cut at each threshold t (boundaries: edges with weight > t).

  Args:
    h, v: (H, W-1) and (H-1, W) edge weights of one image.
    thresholds: 1-D array of thresholds, any order; compared in float64 (pass float64
      weights to match `jhseg.hierarchy.cut_at_threshold` exactly).

  Returns:
    int64 array shaped like `thresholds`.
  """
  caller = "num_regions_at_thresholds"
  thresholds = _check_thresholds(thresholds, caller)
  return _counts(*_canonical_bpt(h, v, caller), thresholds)


def first_cut_with_at_most(h, v, *, thresholds, max_regions: int) -> tuple[np.ndarray, int]:
  """The cut at the first of `thresholds` (in the given order) with <= `max_regions` regions.

  One hierarchy serves both the counting and the cut. If no threshold qualifies, the
  cut at the last one is returned (as a loop that runs out of thresholds would).

  Returns:
    (labels (H, W) int32 0..n-1 numbered by first pixel in raster order, index of the
    threshold used).
  """
  caller = "first_cut_with_at_most"
  if int(max_regions) < 1:
    raise ValueError(f"{caller}: argument `max_regions` must be >= 1; got {max_regions}.")
  thresholds = _check_thresholds(thresholds, caller)
  tree, altitudes, shape = _canonical_bpt(h, v, caller)
  fits = _counts(tree, altitudes, shape, thresholds) <= int(max_regions)
  k = int(np.argmax(fits)) if fits.any() else thresholds.size - 1
  if tree is None:
    return np.zeros(shape, np.int32), k
  altitudes = np.asarray(altitudes, np.float64)
  labels = hg.labelisation_horizontal_cut_from_threshold(tree, altitudes, float(thresholds[k]))
  return pixel_graph.raster_order_labels(np.reshape(labels, shape)), k
