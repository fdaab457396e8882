"""Ultrametric targets of Ultrametric Pascal-Part (paper, section 2) and of its binary variants.

HGM (hierarchical) target, from the stacked part map P (fine) and instance map I (coarse):

  w(e) = 1    if I differs across e                    (instance boundary, incl. background),
         0.5  if I agrees and P differs across e       (part boundary inside an object),
         0    otherwise,

then regions smaller than `min_area` = 30 px are removed from the hierarchy (Perret et al.,
"Removing non-significant regions in hierarchical clustering and segmentation", PRL 2019, the
filtering the paper cites) so the stored map is the saliency of a hierarchy with no region
under 30 px at any level. Since the filter only merges regions and reuses altitudes, the
result keeps the levels {0, 0.5, 1}.

The stored instance and part maps are made consistent with the filtered target: each region of
the filtered hierarchy at the instance (resp. part) level takes the original instance (resp.
part) id covering most of its pixels (ties: the smaller id). A removed region therefore takes
the id of the region it was merged into; an object smaller than 30 px disappears from the maps
(its class stays in `instance_classes`).

BGM_UPP (binary_parts): 1 on every boundary of the filtered part level (w >= 0.5), else 0.
BGM_PC (binary_context): 1 where the PASCAL-Context label differs, after the same removal of
regions under 30 px from that one-level hierarchy, else 0.
"""
from __future__ import annotations

import jax
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from jhseg import grid
from jhseg import hierarchy

MIN_REGION_AREA = 30  # pixels, the paper's value
HGM_ALTITUDES = (0.5, 1.0)  # parts, instances

# Jitted once per image shape: eager dispatch would compile every jnp op per new shape
# (about 2 s per shape instead of 0.4 s; VOC has hundreds of image shapes).
_nested_labels_to_ultrametric = jax.jit(grid.nested_labels_to_ultrametric)
_boundary_edges = jax.jit(grid.boundary_edges)
_edges_to_interpixel = jax.jit(grid.edges_to_interpixel)


def _as_numpy_edges(edges) -> tuple[np.ndarray, np.ndarray]:
  h, v = edges
  return np.asarray(h, np.float32), np.asarray(v, np.float32)


def region_labels(h: np.ndarray, v: np.ndarray, threshold: float) -> np.ndarray:
  """Connected components (0..n-1, int32 HxW) of the graph of edges with weight < threshold."""
  height, width = h.shape[0], v.shape[1]
  index = np.arange(height * width).reshape(height, width)
  keep_h, keep_v = h < threshold, v < threshold
  rows = np.concatenate([index[:, :-1][keep_h], index[:-1, :][keep_v]])
  cols = np.concatenate([index[:, 1:][keep_h], index[1:, :][keep_v]])
  graph = scipy.sparse.coo_matrix((np.ones(rows.size, np.int8), (rows, cols)),
                                  shape=(height * width, height * width))
  _, labels = scipy.sparse.csgraph.connected_components(graph, directed=False)
  return labels.reshape(height, width).astype(np.int32)


def majority_relabel(regions: np.ndarray, labels: np.ndarray) -> np.ndarray:
  """Each region takes the label covering most of its pixels (ties: the smaller label)."""
  num_labels = int(labels.max()) + 1
  counts = np.zeros((int(regions.max()) + 1, num_labels), np.int64)
  np.add.at(counts, (regions.ravel(), labels.ravel()), 1)
  return np.argmax(counts, axis=1).astype(np.int32)[regions]


def _filtered(h: np.ndarray, v: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
  return _as_numpy_edges(hierarchy.filter_small_regions(h, v, min_area=min_area))


def hierarchical_target(instances: np.ndarray, parts: np.ndarray, *,
                        min_area: int = MIN_REGION_AREA
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(ucm interpixel float32 (2H-1, 2W-1), instances, parts) after small-region removal."""
  h, v = _as_numpy_edges(_nested_labels_to_ultrametric(
      np.stack([parts, instances]), np.asarray(HGM_ALTITUDES, np.float32)))
  h, v = _filtered(h, v, min_area)
  filtered_instances = majority_relabel(region_labels(h, v, 0.75), instances)
  filtered_parts = majority_relabel(region_labels(h, v, 0.25), parts)
  ucm = np.asarray(_edges_to_interpixel(h, v), np.float32)
  return ucm, filtered_instances, filtered_parts


def binary_parts_target(ucm: np.ndarray) -> np.ndarray:
  """BGM_UPP: 1 on every part or instance boundary of a hierarchical target, else 0."""
  return (ucm >= 0.5).astype(np.float32)


def binary_label_target(labels: np.ndarray, *, min_area: int = MIN_REGION_AREA) -> np.ndarray:
  """BGM_PC: boundaries of a label map (1 where labels differ), regions < min_area removed."""
  h, v = _as_numpy_edges(_boundary_edges(labels))
  h, v = _filtered(h, v, min_area)
  return np.asarray(_edges_to_interpixel(h, v), np.float32)
