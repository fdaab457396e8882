"""The pixel 4-adjacency graph on the host: NumPy (h, v) <-> Higra's flat edge weights.

Every call builds a fresh `hg.get_4_adjacency_graph`, and every Higra function
below receives its leaf graph explicitly: callbacks run on several host threads
at once and must not share graph objects (Higra attaches attributes to graph
objects in a process-wide cache).
"""
from __future__ import annotations

import higra as hg
import numpy as np

from jhseg import grid


def check_edges(h, v, *, caller: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
  """NumPy (h, v) of one image and its (H, W); raises a ValueError naming the bad argument."""
  h, v = np.asarray(h), np.asarray(v)
  if h.ndim != 2:
    raise ValueError(f"{caller}: argument `h` must have shape (H, W-1) for one image; got {h.shape}.")
  shape = grid.grid_shape_from_edges(h, v, caller=caller)
  return h, v, shape


def float_dtype(*arrays) -> np.dtype:
  """float32 for float32 (or smaller) inputs, float64 otherwise."""
  return np.result_type(np.float32, *[a.dtype for a in arrays])


def to_flat(h: np.ndarray, v: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """(h, v) -> weights in the edge order of `hg.get_4_adjacency_graph(shape)`."""
  return np.concatenate([h.ravel(), v.ravel()])[grid.flat_edge_permutation(shape)]


def from_flat(w: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Weights in Higra's 4-adjacency edge order -> (h (H, W-1), v (H-1, W))."""
  h_pos, v_pos = grid.flat_edge_positions(shape)
  return w[h_pos], w[v_pos]


def fresh_graph(shape: tuple[int, int]) -> hg.UndirectedGraph:
  """A new 4-adjacency graph, owned by the caller (never shared between threads)."""
  return hg.get_4_adjacency_graph(tuple(int(s) for s in shape))


def raster_order_labels(labels: np.ndarray) -> np.ndarray:
  """Relabels to 0..n-1 numbered by each region's first pixel in raster order (int32)."""
  flat = np.asarray(labels).ravel()
  _, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
  rank = np.empty(first.size, dtype=np.int32)
  rank[np.argsort(first)] = np.arange(first.size, dtype=np.int32)
  return rank[inverse.ravel()].reshape(np.shape(labels))
