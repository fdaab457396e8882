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


def num_regions_at_thresholds(h, v, thresholds) -> np.ndarray:
  """Number of regions of the cut at each threshold t (boundaries: edges with weight > t).

  Args:
    h, v: (H, W-1) and (H-1, W) edge weights of one image.
    thresholds: 1-D array of thresholds, any order.

  Returns:
    int64 array shaped like `thresholds`.
  """
  caller = "num_regions_at_thresholds"
  h, v, shape = pixel_graph.check_edges(h, v, caller=caller)
  thresholds = np.asarray(thresholds, np.float64)
  if thresholds.ndim != 1:
    raise ValueError(f"{caller}: argument `thresholds` must be 1-D; got shape {thresholds.shape}.")
  num_pixels = shape[0] * shape[1]
  weights = pixel_graph.to_flat(h, v, shape)
  if weights.size == 0:  # a single pixel
    return np.ones(thresholds.shape, np.int64)
  sources, targets = pixel_graph.fresh_graph(shape).edge_list()
  tree, altitudes = hg.bpt_canonical((sources, targets, num_pixels), weights)
  inner = np.sort(np.asarray(altitudes, np.float64)[tree.num_leaves():])
  return num_pixels - np.searchsorted(inner, thresholds, side="right").astype(np.int64)
