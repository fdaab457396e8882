"""Hierarchies <-> ultrametric edge weights on the pixel 4-adjacency graph.

An ultrametric contour map (UCM) is the saliency map of a hierarchy of partitions
(Najman, "On the equivalence between hierarchical segmentations and ultrametric
watersheds", JMIV 2011): the weight of edge {p, q} is the altitude of the smallest
region containing p and q. Cutting it at threshold t -- boundaries are the edges
with weight > t -- gives the partition of the hierarchy at level t.
"""
from __future__ import annotations

from typing import Sequence

import higra as hg
import numpy as np

from jhseg import grid
from jhseg.hierarchy import area_filter
from jhseg.hierarchy import pixel_graph


def _single_linkage(h, v, caller: str):
  """Canonical BPT (Kruskal) of the pixel graph weighted by (h, v), plus its graph data."""
  h, v, shape = pixel_graph.check_edges(h, v, caller=caller)
  sources, targets = pixel_graph.fresh_graph(shape).edge_list()
  weights = pixel_graph.to_flat(h, v, shape)
  order = np.argsort(weights, kind="stable")
  tree, altitudes = hg.bpt_canonical((sources, targets, shape[0] * shape[1]), weights,
                                     sorted_edge_indices=order)
  return tree, altitudes, sources, targets, weights, order, shape


def is_ultrametric(h, v) -> bool:
  """Whether (h, v) equals its subdominant ultrametric, i.e. is the saliency map of a hierarchy.

  Equivalently: every edge weight is the minimum over paths between its ends of
  the largest weight on the path.
  """
  tree, altitudes, sources, targets, weights, _, _ = _single_linkage(h, v, "is_ultrametric")
  return bool(np.array_equal(
      area_filter.leaf_graph_saliency(tree, altitudes, sources, targets), weights))


def tree_from_ultrametric(h, v, *, check: bool = True) -> tuple[hg.Tree, np.ndarray]:
  """Ultrametric edge weights of one H x W image -> (tree, altitudes).

  The tree is the canonical (non-binary, quasi-flat zones) hierarchy: leaves are the
  H*W pixels in raster order, and no inner node has its parent's altitude. For a
  non-ultrametric input, it is the single-linkage hierarchy of (h, v).

  Args:
    h, v: (H, W-1) and (H-1, W) edge weights.
    check: raise a ValueError if (h, v) is not an ultrametric (see `is_ultrametric`).
  """
  tree, altitudes, sources, targets, weights, _, _ = _single_linkage(h, v, "tree_from_ultrametric")
  if check:
    saliency = area_filter.leaf_graph_saliency(tree, altitudes, sources, targets)
    bad = int(np.count_nonzero(saliency != weights))
    if bad:
      raise ValueError(
          f"tree_from_ultrametric: arguments `h`, `v` are not an ultrametric: {bad} edges exceed "
          "the largest weight of some other path between their ends (pass check=False to get "
          "the single-linkage hierarchy instead).")
  return hg.canonize_hierarchy(tree, altitudes)


def ultrametric_from_tree(tree: hg.Tree, altitudes, shape) -> tuple[np.ndarray, np.ndarray]:
  """(tree, altitudes) with the H*W pixels of `shape` as leaves (raster order) -> (h, v) saliency."""
  height, width = (int(s) for s in shape)
  if tree.num_leaves() != height * width:
    raise ValueError(
        f"ultrametric_from_tree: argument `tree` must have H*W = {height * width} leaves for "
        f"shape {tuple(shape)}; got {tree.num_leaves()}.")
  altitudes = np.asarray(altitudes)
  if altitudes.shape != (tree.num_vertices(),):
    raise ValueError(
        f"ultrametric_from_tree: argument `altitudes` must have shape ({tree.num_vertices()},), "
        f"one per tree node; got {altitudes.shape}.")
  sources, targets = pixel_graph.fresh_graph((height, width)).edge_list()
  saliency = area_filter.leaf_graph_saliency(tree, altitudes, sources, targets)
  return pixel_graph.from_flat(saliency, (height, width))


def filter_small_regions(h, v, *, min_area: float) -> tuple[np.ndarray, np.ndarray]:
  """Removes the regions smaller than `min_area` pixels from the hierarchy of (h, v).

  Area filtering of Perret et al. (PRL 2019), as `hg.filter_small_nodes_from_tree`,
  applied to the canonical binary partition tree of (h, v) (for an ultrametric, a
  binary version of its hierarchy; ties are broken by Higra's edge order). A frontier
  between two sibling regions disappears (weight 0) when the smaller one has fewer than
  `min_area` pixels, so every region of the result has >= min_area pixels (unless the
  whole image is smaller).

  Returns:
    The filtered ultrametric (h, v), same shapes.
  """
  tree, altitudes, sources, targets, weights, order, shape = _single_linkage(
      h, v, "filter_small_regions")
  leaf_area = np.ones(shape[0] * shape[1])
  tree, altitudes = area_filter.filter_small_frontiers(
      tree, altitudes, sources, targets, order, leaf_area, min_area)
  saliency = area_filter.leaf_graph_saliency(tree, altitudes, sources, targets)
  dtype = pixel_graph.float_dtype(np.asarray(h), np.asarray(v))
  return pixel_graph.from_flat(saliency.astype(dtype), shape)


def _is_nested_np(fine: np.ndarray, coarse: np.ndarray) -> bool:
  """Each fine label lies in one coarse label: #distinct (fine, coarse) pairs == #fine labels."""
  pairs = np.unique(np.stack([fine.ravel(), coarse.ravel()]), axis=1)
  return pairs.shape[1] == np.unique(fine).size


def ultrametric_from_nested_segmentations(
    labels_fine_to_coarse: Sequence[np.ndarray], altitudes=None) -> tuple[np.ndarray, np.ndarray]:
  """Nested label maps (finest first) of one image -> ultrametric (h, v).

  w(e) = altitude of the coarsest level whose labels differ across e (see
  `jhseg.grid.nested_labels_to_ultrametric`); cutting w at altitudes[k] gives back
  level k+1 (and any t < altitudes[0] the finest level).

  Args:
    labels_fine_to_coarse: K integer label maps (H, W), each refining the next.
    altitudes: K increasing positive altitudes; default (1/K, 2/K, ..., 1), e.g.
      (0.5, 1) for parts and objects as in jhseg's ultrametric targets.

  Raises:
    ValueError if a level does not refine the next one.
  """
  caller = "ultrametric_from_nested_segmentations"
  levels = [np.asarray(l) for l in labels_fine_to_coarse]
  if not levels or any(l.ndim != 2 or l.shape != levels[0].shape for l in levels):
    raise ValueError(f"{caller}: argument `labels_fine_to_coarse` must be K >= 1 label maps of one "
                     f"shape (H, W); got shapes {[l.shape for l in levels]}.")
  for k in range(len(levels) - 1):
    if not _is_nested_np(levels[k], levels[k + 1]):
      raise ValueError(f"{caller}: argument `labels_fine_to_coarse`: level {k} does not refine "
                       f"level {k + 1} (some level-{k} label spans several level-{k + 1} labels).")
  if altitudes is None:
    altitudes = np.arange(1, len(levels) + 1) / len(levels)
  altitudes = np.asarray(altitudes, dtype=np.float32)
  if altitudes.shape != (len(levels),) or np.any(np.diff(altitudes) <= 0) or altitudes[0] <= 0:
    raise ValueError(f"{caller}: argument `altitudes` must be {len(levels)} positive increasing "
                     f"values; got {altitudes.tolist()}.")
  h, v = grid.nested_labels_to_ultrametric(np.stack(levels), altitudes)
  return np.asarray(h), np.asarray(v)
