"""Edge weights <-> ultrametric contour map (UCM) images, in both conventions.

interpixel (2H-1, 2W-1): pixel (i, j) at (2i, 2j) (value 0), h[i, j] at (2i, 2j+1),
  v[i, j] at (2i+1, 2j), and the corner (2i+1, 2j+1) holds the max of its four
  incident edges h[i, j], h[i+1, j], v[i, j], v[i, j+1].
BSDS ucm2 (2H+1, 2W+1): the interpixel map padded by one on each side by replicating
  its outer rows and columns, as in the BSDS500 gPb-owt-ucm files (Arbelaez et al.,
  TPAMI 2011; checked on the official benchmark sample: every file equals the edge-mode
  padding of its interior, none the zero padding). The image-resolution boundary map
  is ucm2[2::2, 2::2]: the corner below-right of each pixel, which for the last row
  (column) is the replicated horizontal (vertical) edge to the pixel's right (below).
"""
from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from jhseg.grid.edges import grid_shape_from_edges


def edges_to_interpixel(h, v) -> jnp.ndarray:
  """(h (..., H, W-1), v (..., H-1, W)) -> interpixel map (..., 2H-1, 2W-1)."""
  height, width = grid_shape_from_edges(h, v, caller="edges_to_interpixel")
  h, v = jnp.asarray(h), jnp.asarray(v)
  dtype = jnp.result_type(h, v)
  out = jnp.zeros(h.shape[:-2] + (2 * height - 1, 2 * width - 1), dtype)
  out = out.at[..., 0::2, 1::2].set(h.astype(dtype))
  out = out.at[..., 1::2, 0::2].set(v.astype(dtype))
  corners = jnp.maximum(jnp.maximum(h[..., :-1, :], h[..., 1:, :]),
                        jnp.maximum(v[..., :, :-1], v[..., :, 1:]))
  return out.at[..., 1::2, 1::2].set(corners.astype(dtype))


def _check_odd(ucm, name: str, caller: str, minimum: int) -> None:
  """Last two dims must be odd and >= minimum: 1 for interpixel maps, 3 for ucm2."""
  shape = np.shape(ucm)
  if len(shape) < 2 or any(s % 2 == 0 or s < minimum for s in shape[-2:]):
    expected = "(..., 2H-1, 2W-1)" if minimum == 1 else "(..., 2H+1, 2W+1)"
    raise ValueError(
        f"{caller}: argument `{name}` must have shape {expected} with odd last two dims "
        f">= {minimum}; got {shape}.")


def interpixel_to_edges(ucm) -> tuple[jnp.ndarray, jnp.ndarray]:
  """Interpixel map (..., 2H-1, 2W-1) -> (h (..., H, W-1), v (..., H-1, W)); corners are dropped."""
  _check_odd(ucm, "ucm", "interpixel_to_edges", 1)
  ucm = jnp.asarray(ucm)
  return ucm[..., 0::2, 1::2], ucm[..., 1::2, 0::2]


# border name -> jnp.pad mode
UCM2_BORDERS = {"replicate": "edge", "zero": "constant"}


def interpixel_to_ucm2(ucm, *, border: str = "replicate") -> jnp.ndarray:
  """Interpixel map (..., 2H-1, 2W-1) -> BSDS ucm2 (..., 2H+1, 2W+1).

  Args:
    ucm: interpixel map.
    border: 'replicate' (default) copies the outer rows/columns, exactly as the official
      BSDS500 ucm2 files; 'zero' pads with 0, which drops the last row's horizontal and
      the last column's vertical edges from the image-resolution map ucm2[2::2, 2::2].
  """
  if border not in UCM2_BORDERS:
    raise ValueError(f"interpixel_to_ucm2: unknown border {border!r}; valid names: "
                     f"{sorted(UCM2_BORDERS)}.")
  _check_odd(ucm, "ucm", "interpixel_to_ucm2", 1)
  ucm = jnp.asarray(ucm)
  return jnp.pad(ucm, [(0, 0)] * (ucm.ndim - 2) + [(1, 1), (1, 1)], mode=UCM2_BORDERS[border])


def ucm2_to_interpixel(ucm2) -> jnp.ndarray:
  """BSDS ucm2 (..., 2H+1, 2W+1) -> interpixel map (..., 2H-1, 2W-1) (the border is dropped)."""
  _check_odd(ucm2, "ucm2", "ucm2_to_interpixel", 3)
  return jnp.asarray(ucm2)[..., 1:-1, 1:-1]
