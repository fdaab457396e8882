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


def _as_higra_dtype(x: np.ndarray) -> np.ndarray:
  """Higra takes float32/float64 (and ints); bfloat16/float16 become float32, ints/bools float64."""
  if x.dtype in (np.float32, np.float64):
    return x
  return x.astype(np.float64 if x.dtype.kind in "iub" else np.float32)


def check_edges(h, v, *, caller: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
  """NumPy (h, v) of one image and its (H, W); raises a ValueError naming the bad argument."""
  h, v = _as_higra_dtype(np.asarray(h)), _as_higra_dtype(np.asarray(v))
  if h.ndim != 2:
    raise ValueError(f"{caller}: argument `h` must have shape (H, W-1) for one image; got {h.shape}.")
  shape = grid.grid_shape_from_edges(h, v, caller=caller)
  return h, v, shape


def float_dtype(*arrays) -> np.dtype:
  """float32 for float32 (or smaller) inputs, float64 otherwise."""
  return np.result_type(np.float32, *[a.dtype for a in arrays])


def _right_down_mask(shape: tuple[int, int]) -> np.ndarray:
  """(H, W, 2) mask of the existing (right, down) edges of each pixel: raveled, Higra's order."""
  height, width = shape
  exists = np.zeros((height, width, 2), dtype=bool)
  exists[:, :width - 1, 0] = True
  exists[:height - 1, :, 1] = True
  return exists


def to_flat(h: np.ndarray, v: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
  """(h, v) -> weights in the edge order of `hg.get_4_adjacency_graph(shape)`."""
  height, width = shape
  right_down = np.zeros((height, width, 2), dtype=np.result_type(h, v))
  right_down[:, :width - 1, 0] = h
  right_down[:height - 1, :, 1] = v
  return right_down[_right_down_mask(shape)]


def from_flat(w: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
  """Weights in Higra's 4-adjacency edge order -> (h (H, W-1), v (H-1, W))."""
  height, width = shape
  right_down = np.zeros((height, width, 2), dtype=w.dtype)
  right_down[_right_down_mask(shape)] = w
  return right_down[:, :width - 1, 0].copy(), right_down[:height - 1, :, 1].copy()


def fresh_graph(shape: tuple[int, int]) -> hg.UndirectedGraph:
  """A new 4-adjacency graph, owned by the caller (never shared between threads)."""
  return hg.get_4_adjacency_graph(tuple(int(s) for s in shape))


def raster_order_labels(labels: np.ndarray) -> np.ndarray:
  """Relabels non-negative labels to 0..n-1 numbered by each region's first pixel in raster order."""
  flat = np.asarray(labels).ravel()
  first = np.full(int(flat.max()) + 1, flat.size)
  np.minimum.at(first, flat, np.arange(flat.size))
  used = np.flatnonzero(first < flat.size)
  rank = np.empty(first.size, dtype=np.int32)
  rank[used[np.argsort(first[used])]] = np.arange(used.size, dtype=np.int32)
  return rank[flat].reshape(np.shape(labels))
