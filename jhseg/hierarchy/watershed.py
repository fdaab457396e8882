"""Watershed superpixels of an edge-weighted pixel graph."""
from __future__ import annotations

import higra as hg
import numpy as np

from jhseg.hierarchy import pixel_graph


def watershed_superpixels(h, v) -> np.ndarray:
  """Watershed cut of the 4-adjacency graph weighted by (h, v) (Cousty et al., PAMI 2009).

  One region per minimum of the edge weights (Higra's `labelisation_watershed`).

  Args:
    h, v: (H, W-1) and (H-1, W) edge weights (dissimilarities) of one image.

  Returns:
    (H, W) int32 labels 0..n-1, numbered by first pixel in raster order.
  """
  h, v, shape = pixel_graph.check_edges(h, v, caller="watershed_superpixels")
  graph = pixel_graph.fresh_graph(shape)
  labels = hg.labelisation_watershed(graph, pixel_graph.to_flat(h, v, shape))
  return pixel_graph.raster_order_labels(np.reshape(labels, shape))
