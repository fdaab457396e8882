"""The 4-adjacency edges of an H x W pixel grid and Higra's flat edge order.

jhseg stores the edge weights of an image as two arrays (see docs/architecture):

  horizontal `h`: shape (..., H, W-1); h[..., i, j] weighs the edge (i, j)-(i, j+1);
  vertical   `v`: shape (..., H-1, W); v[..., i, j] weighs the edge (i, j)-(i+1, j).

Higra's `hg.get_4_adjacency_graph((H, W))` numbers the same edges in one flat
array: for each pixel in raster order, its right edge, then its down edge, each
only when it exists. `edges_to_flat` / `flat_to_edges` convert between the two
with static gathers, so they jit and batch over any leading dimensions.
"""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp

Shape2D = tuple[int, int]


def grid_shape_from_edges(h, v, *, caller: str) -> Shape2D:
  """Returns (H, W) of the image whose edges are `h` and `v`; raises on bad shapes."""
  h_shape, v_shape = tuple(np.shape(h)), tuple(np.shape(v))
  if len(h_shape) < 2:
    raise ValueError(f"{caller}: argument `h` must have shape (..., H, W-1); got {h_shape}.")
  height, width = h_shape[-2], h_shape[-1] + 1
  expected_v = h_shape[:-2] + (height - 1, width)
  if v_shape != expected_v:
    raise ValueError(
        f"{caller}: argument `v` must have shape (..., H-1, W) = {expected_v} to match `h` of "
        f"shape {h_shape} = (..., H, W-1); got {v_shape}.")
  if height < 1:
    raise ValueError(f"{caller}: argument `h` describes an empty image (H = 0); got {h_shape}.")
  return height, width


def num_edges(shape: Shape2D) -> int:
  """Number of 4-adjacency edges of an H x W grid: H(W-1) + (H-1)W."""
  height, width = shape
  return height * (width - 1) + (height - 1) * width


def flat_edge_positions(shape: Shape2D) -> tuple[np.ndarray, np.ndarray]:
  """Index of every edge of `h` and `v` in Higra's flat order (static NumPy arrays).

  Returns `(h_pos, v_pos)` with shapes (H, W-1) and (H-1, W): `w[h_pos[i, j]]`
  is the weight of edge (i, j)-(i, j+1) in the flat array `w`.
  """
  height, width = shape
  exists = np.zeros((height, width, 2), dtype=bool)
  exists[:, :width - 1, 0] = True  # right edge
  exists[:height - 1, :, 1] = True  # down edge
  position = (np.cumsum(exists.ravel()) - 1).reshape(height, width, 2)
  return position[:, :width - 1, 0], position[:height - 1, :, 1]


def flat_edge_permutation(shape: Shape2D) -> np.ndarray:
  """`perm` such that `concat([h.ravel(), v.ravel()])[perm]` is in Higra's flat order."""
  h_pos, v_pos = flat_edge_positions(shape)
  perm = np.empty(num_edges(shape), dtype=np.int64)
  perm[h_pos.ravel()] = np.arange(h_pos.size)
  perm[v_pos.ravel()] = h_pos.size + np.arange(v_pos.size)
  return perm


def edges_to_flat(h, v) -> jnp.ndarray:
  """(h (..., H, W-1), v (..., H-1, W)) -> w (..., E) in Higra's 4-adjacency edge order."""
  height, width = grid_shape_from_edges(h, v, caller="edges_to_flat")
  h, v = jnp.asarray(h), jnp.asarray(v)
  batch = h.shape[:-2]
  both = jnp.concatenate([h.reshape(batch + (-1,)), v.reshape(batch + (-1,))], axis=-1)
  return both[..., flat_edge_permutation((height, width))]


def flat_to_edges(w, shape: Shape2D) -> tuple[jnp.ndarray, jnp.ndarray]:
  """w (..., E) in Higra's 4-adjacency edge order of an image of `shape` (H, W) -> (h, v)."""
  shape = tuple(int(s) for s in shape)
  if len(shape) != 2 or min(shape) < 1:
    raise ValueError(f"flat_to_edges: argument `shape` must be (H, W) with H, W >= 1; got {shape}.")
  expected = num_edges(shape)
  if np.ndim(w) < 1 or np.shape(w)[-1] != expected:
    raise ValueError(
        f"flat_to_edges: argument `w` must have shape (..., E) with E = H(W-1) + (H-1)W = "
        f"{expected} for shape {shape}; got {np.shape(w)}.")
  w = jnp.asarray(w)
  h_pos, v_pos = flat_edge_positions(shape)
  return w[..., h_pos], w[..., v_pos]
