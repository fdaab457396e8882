"""Ultrametric contour maps (UCMs) as images and PNG files.

A UCM is drawn dark on white (0 -> white, the largest weight -> black), as
the BSDS benchmark shows them, either on the interpixel grid (2H-1, 2W-1),
where every edge has its own site, or at image resolution (H, W) with the
BSDS convention `ucm2[2::2, 2::2]` (each pixel shows the corner below and
to its right).
"""
from __future__ import annotations

import os

import matplotlib.image
import numpy as np

from jhseg import grid
from jhseg.viz import _canvas


def _interpixel(h, v) -> np.ndarray:
  return np.asarray(grid.edges_to_interpixel(np.asarray(h), np.asarray(v)))


def _image_resolution(h, v) -> np.ndarray:
  return np.asarray(grid.interpixel_to_ucm2(grid.edges_to_interpixel(
      np.asarray(h), np.asarray(v))))[2::2, 2::2]


RESOLUTIONS = {"interpixel": _interpixel, "image": _image_resolution}


def ucm_image(h, v, *, resolution: str = "interpixel") -> np.ndarray:
  """UCM of edge weights h (H, W-1), v (H-1, W) as a 2-D float array."""
  if resolution not in RESOLUTIONS:
    raise ValueError(f"ucm_image: unknown resolution {resolution!r}; "
                     f"valid: {sorted(RESOLUTIONS)}")
  return RESOLUTIONS[resolution](h, v)


def ucm_to_rgb(ucm: np.ndarray, *, vmax: float | None = None) -> np.ndarray:
  """Grey RGB image in [0, 1]: white where the UCM is 0, black at `vmax`."""
  ucm = np.asarray(ucm, np.float64)
  vmax = float(ucm.max()) if vmax is None else float(vmax)
  if vmax <= 0:
    vmax = 1.0
  grey = 1.0 - np.clip(ucm / vmax, 0.0, 1.0)
  return np.repeat(grey[..., None], 3, axis=-1)


def save_ucm_png(path: str | os.PathLike, h, v, *, resolution: str = "interpixel",
                 vmax: float | None = None) -> str:
  """Writes the UCM of (h, v) as a PNG of the UCM's own size; returns the path."""
  path = _canvas.prepare_png_path(path, caller="save_ucm_png")
  matplotlib.image.imsave(path, ucm_to_rgb(ucm_image(h, v, resolution=resolution),
                                           vmax=vmax))
  return path
