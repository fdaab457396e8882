"""Horizontal cuts of the hierarchy of edge weights (h, v): label maps.

Convention (as BSDS UCMs): at threshold t the boundaries are the edges with
weight > t; the regions are the connected components of the edges with weight <= t.
For an ultrametric these are the regions of its hierarchy at level t; for other
weights, those of their single-linkage hierarchy.
"""
from __future__ import annotations

import higra as hg
import numpy as np

from jhseg.hierarchy import pixel_graph


def _canonical_tree(h, v, caller: str):
  h, v, shape = pixel_graph.check_edges(h, v, caller=caller)
  sources, targets = pixel_graph.fresh_graph(shape).edge_list()
  tree, altitudes = hg.bpt_canonical((sources, targets, shape[0] * shape[1]),
                                     pixel_graph.to_flat(h, v, shape))
  return tree, altitudes, shape


def cut_at_threshold(h, v, threshold: float) -> np.ndarray:
  """Partition whose boundaries are the edges with weight > threshold.

  Returns:
    (H, W) int32 labels 0..n-1 numbered by first pixel in raster order.
  """
  tree, altitudes, shape = _canonical_tree(h, v, "cut_at_threshold")
  # Higra merges the leaves whose lowest common ancestor has altitude <= threshold.
  labels = hg.labelisation_horizontal_cut_from_threshold(tree, altitudes, float(threshold))
  return pixel_graph.raster_order_labels(np.reshape(labels, shape))


def cut_with_num_regions(h, v, num_regions: int) -> np.ndarray:
  """Finest horizontal cut with at most `num_regions` regions.

  Among the thresholds t of the hierarchy's levels, takes the smallest whose cut has
  <= num_regions regions -- HSG (Ke et al., CVPR 2022) raises the UCM threshold until
  the segmentation has few enough regions. Pass N-1 for "fewer than N". If the finest
  level (t = 0 for a UCM; single pixels if no weight is <= 0) already qualifies, it is
  returned.

  Returns:
    (H, W) int32 labels 0..n-1 numbered by first pixel in raster order.
  """
  if int(num_regions) < 1:
    raise ValueError(f"cut_with_num_regions: argument `num_regions` must be >= 1; got {num_regions}.")
  tree, altitudes, shape = _canonical_tree(h, v, "cut_with_num_regions")
  explorer = hg.HorizontalCutExplorer(tree, altitudes)
  cut = explorer.horizontal_cut_from_num_regions(int(num_regions), at_least=False)
  labels = cut.labelisation_leaves(tree, None)  # no leaf graph: flat labels in raster order
  return pixel_graph.raster_order_labels(np.reshape(labels, shape))
