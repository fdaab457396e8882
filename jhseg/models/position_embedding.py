"""Learned absolute 2-D position embeddings (DETR's `PositionEmbeddingLearned`).

HSG adds them to the keys and queries of its clustering transformers (the authors'
code, twke18/HSG: one table of rows and one of columns, 50 entries each, uniform
[0, 1) initialisation, learning rate x10): the embedding of the pixel in row i and
column j of the feature grid is

  pos(i, j) = [col_embed[j]; row_embed[i]]        (dim / 2 + dim / 2 values)

and a segment's position is the mean over its pixels (`segment_positions`).

Choice for grids other than the training one: the table is indexed on the grid of
the training output stride (`grid_for`), then resized bilinearly to the grid in use
(as the authors resize position embeddings with the embeddings when they upsample
to the input size), so that evaluation at output stride 8 sees the positions the
model was trained with at stride 16 instead of indices it never saw.
"""
from __future__ import annotations

import math

from flax import nnx
import jax
import jax.numpy as jnp

NUM_POSITIONS = 50  # DETR / HSG table size per axis


class LearnedPositionEmbedding(nnx.Module):
  """pos(i, j) = [col_embed[j]; row_embed[i]], each a learned (num_positions, dim/2) table."""

  def __init__(self, dim: int, *, num_positions: int = NUM_POSITIONS, rngs: nnx.Rngs):
    if dim % 2:
      raise ValueError(f"LearnedPositionEmbedding: dim={dim} must be even (half rows, half "
                       f"columns)")
    self.dim = dim
    self.num_positions = num_positions
    init = nnx.initializers.uniform(scale=1.0)  # [0, 1), as torch.nn.init.uniform_
    self.row_embed = nnx.Param(init(rngs.params(), (num_positions, dim // 2)))
    self.col_embed = nnx.Param(init(rngs.params(), (num_positions, dim // 2)))

  def __call__(self, height: int, width: int) -> jax.Array:
    """(height, width, dim) embeddings of a height x width grid (indices from 0)."""
    if height > self.num_positions or width > self.num_positions:
      raise ValueError(
          f"LearnedPositionEmbedding: a {height}x{width} feature grid needs more than the "
          f"{self.num_positions} positions per axis of the table (training crops must give "
          f"at most {self.num_positions} embedding cells per side)")
    return self._grid(jnp.arange(height), jnp.arange(width))

  def resized(self, grid: tuple[int, int], height: int, width: int) -> jax.Array:
    """Embeddings of `grid` (the training-stride grid) resized bilinearly to height x width.

    Rows / columns of `grid` beyond the table (large evaluation images) reuse its last
    entry: the model never learned positions there, and clamping keeps them at the
    nearest position it knows.
    """
    rows = jnp.minimum(jnp.arange(grid[0]), self.num_positions - 1)
    cols = jnp.minimum(jnp.arange(grid[1]), self.num_positions - 1)
    pos = self._grid(rows, cols)
    if (height, width) == tuple(grid):
      return pos
    return jax.image.resize(pos, (height, width, self.dim), method="bilinear",
                            antialias=False)

  def _grid(self, rows: jax.Array, cols: jax.Array) -> jax.Array:
    shape = (rows.shape[0], cols.shape[0], self.dim // 2)
    col = jnp.broadcast_to(self.col_embed[...][cols][None], shape)
    row = jnp.broadcast_to(self.row_embed[...][rows][:, None], shape)
    return jnp.concatenate([col, row], axis=-1)


def grid_for(height: int, width: int, stride: float) -> tuple[int, int]:
  """Feature grid of an image at `stride` pixels per cell (ceil, as strided convolutions)."""
  return math.ceil(height / stride), math.ceil(width / stride)


def segment_positions(positions: jax.Array, labels: jax.Array, num_segments: int) -> jax.Array:
  """Mean position of every segment.

  Args:
    positions: (H, W, D) shared or (B, H, W, D) per-image position embeddings.
    labels: (B, H, W) int segment ids in [0, num_segments); negative ids are ignored.
    num_segments: S.

  Returns:
    (B, S, D) mean embedding of each segment's pixels; zeros for empty segments (as the
    authors pad missing segments with zeros).
  """
  b = labels.shape[0]
  d = positions.shape[-1]
  flat = labels.reshape(b, -1)
  pos = jnp.broadcast_to(positions, (b,) + labels.shape[1:] + (d,)).reshape(b, -1, d)
  one_hot = jax.nn.one_hot(flat, num_segments, dtype=pos.dtype)  # -1 -> all zeros
  sums = jnp.einsum("bns,bnd->bsd", one_hot, pos)
  counts = jnp.sum(one_hot, axis=1)
  return sums / jnp.maximum(counts, 1.0)[..., None]
