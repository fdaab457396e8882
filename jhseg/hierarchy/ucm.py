"""Dissimilarity edge map -> ultrametric contour map: the Ultrametric U-Net post-processing.

Lapertot, Chierchia, Perret (ultrametric U-Net) turn a predicted dissimilarity on the
pixel 4-adjacency edges into a UCM by:

  1. watershed superpixels of the dissimilarity (`watershed.watershed_superpixels`);
  2. a binary partition tree over the superpixel region adjacency graph (RAG), built by
     average linkage where the dissimilarity between two adjacent regions is the mean
     of the pixel-edge dissimilarities along their common boundary (the RAG edge gets
     that mean, weighted by the boundary length in pixel edges, so merged regions keep
     exact boundary means);
  3. area filtering: removal of the regions with fewer than `min_region_area` pixels
     (default 30, as in the paper), counting *pixels* although leaves are superpixels
     (Perret et al., PRL 2019; see `area_filter`). A removed frontier merges the small
     region into its sibling through the RAG edge of lowest mean dissimilarity between
     them -- our choice: the filter needs one spanning edge per merge, and on an
     average-linkage tree `hg.filter_small_nodes_from_tree` would rebuild a canonical
     BPT from the saliency and so take the lowest-index edge, an arbitrary one; the most
     similar boundary is the natural choice (for single-linkage trees both coincide);
  4. saliency of the filtered hierarchy back on the pixel edges (0 inside superpixels).

The RAG is computed here in NumPy from the label image (no Higra RAG object, whose
vertex/edge maps live in Higra's process-wide attribute cache).
"""
from __future__ import annotations

from typing import Callable

import higra as hg
import numpy as np

from jhseg.hierarchy import area_filter
from jhseg.hierarchy import pixel_graph


def _average_linkage(rag, boundary_mean: np.ndarray, boundary_length: np.ndarray):
  return hg.binary_partition_tree_average_linkage(rag, boundary_mean, boundary_length)


# name -> f(rag, mean dissimilarity per RAG edge, boundary length per RAG edge) -> (tree, altitudes)
LINKAGES: dict[str, Callable] = {
    "average": _average_linkage,
}


def ucm_from_dissimilarity(h, v, *, min_region_area: float = 30,
                           linkage: str = "average") -> tuple[np.ndarray, np.ndarray]:
  """UCM edge weights (h, v) of one image from non-negative edge dissimilarities (h, v).

  Args:
    h, v: (H, W-1) and (H-1, W) non-negative dissimilarities (e.g. from
      `jhseg.grid.pixel_edges(boundary_probability, reduction='mean')`).
    min_region_area: regions with fewer pixels are removed; 0 disables filtering.
    linkage: one of `LINKAGES` (the paper uses 'average').

  Returns:
    The ultrametric (h, v) in the input's float dtype (float32 for float32 inputs).
  """
  caller = "ucm_from_dissimilarity"
  if linkage not in LINKAGES:
    raise ValueError(f"{caller}: unknown linkage {linkage!r}; valid names: {sorted(LINKAGES)}.")
  h, v, shape = pixel_graph.check_edges(h, v, caller=caller)
  dtype = pixel_graph.float_dtype(h, v)
  weights = pixel_graph.to_flat(h, v, shape)
  if weights.size and not (np.all(np.isfinite(weights)) and weights.min() >= 0):
    raise ValueError(f"{caller}: arguments `h`, `v` must be finite and >= 0 (a UCM is 0 inside "
                     f"regions); got min {np.nanmin(weights)}, NaN or inf present: "
                     f"{not np.all(np.isfinite(weights))}.")
  graph = pixel_graph.fresh_graph(shape)
  superpixels = pixel_graph.raster_order_labels(
      np.reshape(hg.labelisation_watershed(graph, weights), shape))
  adjacency = _RegionAdjacency(superpixels, h, v)
  if adjacency.num_edges == 0:  # a single superpixel: no boundary at all
    return np.zeros(h.shape, dtype), np.zeros(v.shape, dtype)

  tree, altitudes = LINKAGES[linkage](adjacency.graph(), adjacency.mean, adjacency.length)
  if min_region_area > 0:
    tree, altitudes = area_filter.filter_small_frontiers(
        tree, altitudes, adjacency.sources, adjacency.targets,
        np.argsort(adjacency.mean, kind="stable"), adjacency.area, min_region_area)
  saliency = area_filter.leaf_graph_saliency(tree, altitudes, adjacency.sources, adjacency.targets)
  return adjacency.back_project(saliency, dtype)


class _RegionAdjacency:
  """Region adjacency graph of a label image, computed in NumPy on the (h, v) layout.

  RAG edge k joins regions sources[k] < targets[k]; `length[k]` is the number of pixel
  edges of their common boundary and `mean[k]` the mean of (h, v) over them.
  """

  def __init__(self, labels: np.ndarray, h: np.ndarray, v: np.ndarray):
    self.num_regions = int(labels.max()) + 1
    self.area = np.bincount(labels.ravel(), minlength=self.num_regions)
    self.on_h = labels[:, 1:] != labels[:, :-1]
    self.on_v = labels[1:, :] != labels[:-1, :]
    first = np.concatenate([labels[:, :-1][self.on_h], labels[:-1, :][self.on_v]]).astype(np.int64)
    second = np.concatenate([labels[:, 1:][self.on_h], labels[1:, :][self.on_v]]).astype(np.int64)
    keys, self.pixel_to_rag = np.unique(
        np.minimum(first, second) * self.num_regions + np.maximum(first, second), return_inverse=True)
    self.sources, self.targets = keys // self.num_regions, keys % self.num_regions
    self.num_edges = keys.size
    along = np.concatenate([h[self.on_h], v[self.on_v]]).astype(np.float64)
    self.length = np.bincount(self.pixel_to_rag, minlength=self.num_edges).astype(np.float64)
    self.mean = np.bincount(self.pixel_to_rag, weights=along, minlength=self.num_edges) / self.length

  def graph(self) -> hg.UndirectedGraph:
    graph = hg.UndirectedGraph(self.num_regions)
    graph.add_edges(self.sources, self.targets)
    return graph

  def back_project(self, rag_weights: np.ndarray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """RAG edge weights -> pixel edges (h, v); 0 inside regions."""
    out_h = np.zeros(self.on_h.shape, dtype)
    out_v = np.zeros(self.on_v.shape, dtype)
    num_h = int(self.on_h.sum())
    out_h[self.on_h] = rag_weights[self.pixel_to_rag[:num_h]]
    out_v[self.on_v] = rag_weights[self.pixel_to_rag[num_h:]]
    return out_h, out_v
