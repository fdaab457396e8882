"""Removal of small regions from a binary hierarchy (area filtering).

Perret, Cousty, Guimaraes, Ferreira, Kenmochi, "Removing non-significant regions
in hierarchical clustering and segmentation", Pattern Recognition Letters 2019:
each inner node n of a binary partition tree stands for the frontier between its
two children; the frontier is removed when the smaller child has area < A. The
filtered hierarchy is the canonical binary partition tree of the tree's minimum
spanning tree whose edge weights are the node altitudes, with removed frontiers
set to 0. This is what `hg.filter_small_nodes_from_tree` computes; it is redone
here so that (1) areas can be counted in *pixels* when the leaves are superpixels
and (2) no Higra graph attribute (e.g. `tree.mst`) is read from the global cache.
"""
from __future__ import annotations

import higra as hg
import numpy as np


def spanning_edges(tree: hg.Tree, sources: np.ndarray, targets: np.ndarray,
                   edge_order: np.ndarray) -> np.ndarray:
  """For each inner node of a binary `tree`, one leaf-graph edge joining its two children.

  A leaf-graph edge {x, y} joins the two children of n iff lca(x, y) = n. Among those,
  the first one in `edge_order` is chosen; with `edge_order` the stable ascending sort of
  the weights of `hg.bpt_canonical`, this is exactly its minimum spanning tree edge
  (Kruskal creates n with the first such edge).

  Returns:
    Edge indices, one per inner node (node n -> entry n - num_leaves).
  """
  num_leaves = tree.num_leaves()
  num_inner = tree.num_vertices() - num_leaves
  lca = tree.lowest_common_ancestor(sources[edge_order], targets[edge_order])
  nodes, first = np.unique(lca, return_index=True)  # first occurrence in edge_order
  representative = np.full(num_inner, -1, dtype=np.int64)
  representative[nodes - num_leaves] = edge_order[first]
  if num_inner and representative.min() < 0:
    raise ValueError("tree is not a binary hierarchy of adjacent regions of its leaf graph: "
                     "some inner node has no leaf-graph edge between its children.")
  return representative


def filter_small_frontiers(tree: hg.Tree, altitudes: np.ndarray, sources: np.ndarray,
                           targets: np.ndarray, edge_order: np.ndarray, leaf_area: np.ndarray,
                           min_area: float) -> tuple[hg.Tree, np.ndarray]:
  """Area filtering of a binary `tree` over the leaf graph (sources, targets).

  Args:
    tree, altitudes: a binary partition tree over the leaf graph, increasing altitudes.
    sources, targets: the leaf graph's edges.
    edge_order: edge indices by preference for the spanning edge of each node (see
      `spanning_edges`).
    leaf_area: area of each leaf (1 for pixels, pixel counts for superpixels).
    min_area: regions with area < min_area are merged into a neighbour.

  Returns:
    The filtered binary tree (over the same leaves) and its altitudes.
  """
  num_leaves = tree.num_leaves()
  span = spanning_edges(tree, sources, targets, edge_order)
  area = hg.accumulate_sequential(tree, np.asarray(leaf_area, dtype=np.float64), hg.Accumulators.sum)
  smaller_child = hg.accumulate_parallel(tree, area, hg.Accumulators.min)[num_leaves:]
  weights = np.array(altitudes[num_leaves:], dtype=np.float64)
  weights[smaller_child < min_area] = 0
  return hg.bpt_canonical((sources[span], targets[span], num_leaves), weights)


def leaf_graph_saliency(tree: hg.Tree, altitudes: np.ndarray, sources: np.ndarray,
                        targets: np.ndarray) -> np.ndarray:
  """Saliency on the leaf graph: altitude of the lowest common ancestor of each edge."""
  return altitudes[tree.lowest_common_ancestor(sources, targets)]
