"""Pixel maps -> 4-adjacency edge weights.

For an edge e = {p, q} between 4-adjacent pixels p, q of a map x:

  'mean'    : w(e) = (x_p + x_q) / 2     -- how the Ultrametric U-Net paper (Lapertot,
                                            Chierchia, Perret) turns a predicted boundary
                                            map into edge dissimilarities;
  'max'     : w(e) = max(x_p, x_q);
  'absdiff' : w(e) = ||x_p - x_q||_2     -- a gradient; with channels, the Euclidean
                                            norm over the trailing channel dimensions
                                            (for one channel, |x_p - x_q|).
"""
from __future__ import annotations

from typing import Callable

import jax.numpy as jnp


def _mean(a, b, channel_axes):
  del channel_axes
  return 0.5 * (a + b)


def _max(a, b, channel_axes):
  del channel_axes
  return jnp.maximum(a, b)


def _absdiff(a, b, channel_axes):
  if not channel_axes:
    return jnp.abs(a - b)
  squared = jnp.sum(jnp.square(a - b), axis=channel_axes)
  # sqrt has an infinite derivative at 0: differentiate through a safe branch instead
  # (gradient 0 where two pixels are equal, as |.| for one channel).
  positive = squared > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, squared, 1)), 0)


# name -> (f(x_p, x_q, channel_axes), accepts channel dimensions)
REDUCTIONS: dict[str, tuple[Callable, bool]] = {
    "mean": (_mean, False),
    "max": (_max, False),
    "absdiff": (_absdiff, True),
}


def pixel_edges(x, *, reduction: str, num_channel_dims: int = 0):
  """Edge weights (h (..., H, W-1), v (..., H-1, W)) of a pixel map x.

  Args:
    x: (..., H, W) map, or (..., H, W, C1, ..., Cn) with `num_channel_dims = n`
      trailing channel dimensions (only for 'absdiff', which then takes the
      Euclidean norm of the difference over all channels).
    reduction: one of `REDUCTIONS` ('mean', 'max', 'absdiff'), see module doc.
    num_channel_dims: number of trailing channel dimensions of x.

  Returns:
    (h, v) with h[..., i, j] = f(x[..., i, j], x[..., i, j+1]) and
    v[..., i, j] = f(x[..., i, j], x[..., i+1, j]).
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"pixel_edges: unknown reduction {reduction!r}; valid names: {sorted(REDUCTIONS)}.")
  combine, accepts_channels = REDUCTIONS[reduction]
  if num_channel_dims < 0:
    raise ValueError(f"pixel_edges: `num_channel_dims` must be >= 0; got {num_channel_dims}.")
  if num_channel_dims and not accepts_channels:
    raise ValueError(
        f"pixel_edges: reduction {reduction!r} needs a single-channel map (num_channel_dims=0); "
        f"got num_channel_dims={num_channel_dims}. Only 'absdiff' reduces over channels.")
  x = jnp.asarray(x)
  if x.ndim < 2 + num_channel_dims:
    raise ValueError(
        f"pixel_edges: argument `x` must have shape (..., H, W) followed by {num_channel_dims} "
        f"channel dims; got {x.shape}.")
  row, col = -2 - num_channel_dims, -1 - num_channel_dims
  channel_axes = tuple(range(-num_channel_dims, 0))

  def take(axis, start, stop):
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, stop)
    return x[tuple(index)]

  h = combine(take(col, None, -1), take(col, 1, None), channel_axes)
  v = combine(take(row, None, -1), take(row, 1, None), channel_axes)
  return h, v
