"""Segment operations in JAX: pooling over label maps, label resizing, adjacency.

A segment map is an int array (B, H, W) of ids in [0, S) for a fixed S (the padded
maximum); pixels with ids outside [0, S) (e.g. -1 on padding) belong to no segment.
Every function is jit-able with static S and differentiable where it makes sense.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _image_ids(labels: jax.Array, num_segments: int) -> jax.Array:
  """(B, H, W) ids -> (B, H*W) int32 ids; out-of-range pixels -> S (a dropped extra row)."""
  inside = (labels >= 0) & (labels < num_segments)
  ids = jnp.where(inside, labels.astype(jnp.int32), num_segments)
  return ids.reshape(labels.shape[0], -1)


def segment_sum(values: jax.Array, labels: jax.Array, num_segments: int) -> jax.Array:
  """(B, H, W, C) values summed per segment -> (B, S, C).

  One scatter-add per image, the batch a vmapped axis: a batch-sharded input stays
  sharded (a scatter over ids offset per image would mix the images' rows)."""
  batch, channels = values.shape[0], values.shape[-1]
  per_image = jax.vmap(lambda x, i: jax.ops.segment_sum(x, i, num_segments=num_segments + 1))
  sums = per_image(values.reshape(batch, -1, channels), _image_ids(labels, num_segments))
  return sums[:, :-1]


def segment_counts(labels: jax.Array, num_segments: int) -> jax.Array:
  """(B, S) number of pixels of each segment (float32)."""
  ones = jnp.ones(labels.shape + (1,), jnp.float32)
  return segment_sum(ones, labels, num_segments)[..., 0]


def segment_mean(values: jax.Array, labels: jax.Array,
                 num_segments: int) -> tuple[jax.Array, jax.Array]:
  """Mean of `values` over each segment (DEL's superpixel pooling, eq. 1).

  v_i = (1 / |S_i|) sum_{k in S_i} x_k. The gradient is the exact one of this linear
  map (DEL eq. 2): dL/dx_k = dL/dv_i / |S_i| for k in S_i.

  Args:
    values: (B, H, W, C).
    labels: (B, H, W) int segment ids.
    num_segments: S, static.

  Returns:
    means (B, S, C) (0 for empty segments) and pixel counts (B, S).
  """
  sums = segment_sum(values, labels, num_segments)
  counts = segment_counts(labels, num_segments)
  return sums / jnp.maximum(counts, 1.0)[..., None].astype(sums.dtype), counts


def segment_prototypes(values: jax.Array, labels: jax.Array, num_segments: int, *,
                       epsilon: float = 1e-12) -> tuple[jax.Array, jax.Array]:
  """L2-normalised segment means (B, S, C) and the (B, S) bool mask of non-empty segments."""
  means, counts = segment_mean(values, labels, num_segments)
  norms = jnp.sqrt(jnp.sum(jnp.square(means), axis=-1, keepdims=True) + epsilon)
  return means / norms, counts > 0


def gather_segments(segment_values: jax.Array, labels: jax.Array, *,
                    fill_value: float = 0.0) -> jax.Array:
  """(B, S, C) per-segment values painted back on the pixels -> (B, H, W, C)."""
  num_segments = segment_values.shape[1]
  inside = (labels >= 0) & (labels < num_segments)
  safe = jnp.where(inside, labels, 0)
  painted = jnp.take_along_axis(segment_values, safe.reshape(safe.shape[0], -1, 1), axis=1)
  painted = painted.reshape(labels.shape + segment_values.shape[-1:])
  return jnp.where(inside[..., None], painted, fill_value)


def resize_labels_nearest(labels: jax.Array | np.ndarray, height: int, width: int, *,
                          pixel_centres: bool = False) -> jax.Array | np.ndarray:
  """(B, H, W) labels -> (B, height, width) by nearest neighbour: no label is ever
  invented by interpolation. A NumPy array gives a NumPy array (host-side use, e.g.
  CAST's evaluation maps to the original image size), a JAX array a JAX array.

  By default the source index is floor(i H / height), PyTorch's
  `interpolate(mode='nearest')` (the convention of the authors' HSG and CAST code).
  With `pixel_centres` it is floor((i + 1/2) H / height), the source pixel under the
  output pixel's centre (symmetric: a 2x downsampling keeps the bottom-right pixel of
  each 2x2 block instead of the top-left one). Indices are static (no gather by data).
  """
  _, h, w = labels.shape
  if (h, w) == (height, width):
    return labels
  offset = 0.5 if pixel_centres else 0.0
  rows = np.minimum(((np.arange(height) + offset) * h / height).astype(np.int64), h - 1)
  cols = np.minimum(((np.arange(width) + offset) * w / width).astype(np.int64), w - 1)
  return labels[:, rows][:, :, cols]


def segment_adjacency(labels: jax.Array, num_segments: int,
                      max_pairs: int) -> tuple[jax.Array, jax.Array]:
  """Pairs of segments adjacent at the pixel level (4-adjacency), fixed size, per image.

  Pair (i, j), i < j, appears once if some pixel of i and some pixel of j are
  horizontal or vertical neighbours; pixels with ids outside [0, S) make no pair. A
  planar partition into S regions has at most 3S - 6 adjacent pairs, so
  max_pairs = 3 S always suffices for connected segments.

  Args:
    labels: (B, H, W) int ids.
    num_segments: S, static.
    max_pairs: P, static; extra pairs beyond P are silently dropped (check `mask.sum()`).

  Returns:
    pairs (B, P, 2) int32 sorted by (i, j), padding rows (0, 0); mask (B, P) bool.
  """
  sentinel = num_segments * num_segments

  def one_image(lab):
    lab = lab.astype(jnp.int32)
    firsts = [lab[:, :-1].reshape(-1), lab[:-1, :].reshape(-1)]
    seconds = [lab[:, 1:].reshape(-1), lab[1:, :].reshape(-1)]
    a, b = jnp.concatenate(firsts), jnp.concatenate(seconds)
    valid = (a != b) & (a >= 0) & (b >= 0) & (a < num_segments) & (b < num_segments)
    keys = jnp.where(valid, jnp.minimum(a, b) * num_segments + jnp.maximum(a, b), sentinel)
    keys = jnp.unique(keys, size=max_pairs + 1, fill_value=sentinel)
    keys = keys[:max_pairs] if max_pairs else keys[:0]
    mask = keys < sentinel
    pairs = jnp.stack([keys // num_segments, keys % num_segments], axis=-1)
    return jnp.where(mask[:, None], pairs, 0).astype(jnp.int32), mask

  return jax.vmap(one_image)(labels)
