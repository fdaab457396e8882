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
     (Perret et al., PRL 2019; see `area_filter`);
  4. saliency of the filtered hierarchy back on the pixel edges (0 inside superpixels).
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
  superpixels = hg.labelisation_watershed(graph, weights)
  rag = hg.make_region_adjacency_graph_from_labelisation(graph, np.ravel(superpixels))
  # Read right after creation from our own fresh RAG object (see pixel_graph's note).
  vertex_map, edge_map = np.asarray(rag.vertex_map), np.asarray(rag.edge_map)
  if rag.num_edges() == 0:  # a single superpixel: no boundary at all
    return pixel_graph.from_flat(np.zeros(weights.shape, dtype), shape)

  on_boundary = edge_map >= 0
  rag_edge = edge_map[on_boundary]
  length = np.bincount(rag_edge, minlength=rag.num_edges()).astype(np.float64)
  mean = np.bincount(rag_edge, weights=weights[on_boundary], minlength=rag.num_edges()) / length
  tree, altitudes = LINKAGES[linkage](rag, mean, length)

  rag_sources, rag_targets = rag.edge_list()
  if min_region_area > 0:
    area = np.bincount(vertex_map, minlength=rag.num_vertices())
    tree, altitudes = area_filter.filter_small_frontiers(
        tree, altitudes, rag_sources, rag_targets, np.argsort(mean, kind="stable"), area,
        min_region_area)
  rag_saliency = area_filter.leaf_graph_saliency(tree, altitudes, rag_sources, rag_targets)
  saliency = np.zeros(weights.shape, dtype)
  saliency[on_boundary] = rag_saliency[rag_edge]
  return pixel_graph.from_flat(saliency, shape)
