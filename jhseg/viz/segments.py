"""Segment colourings, contour overlays, and a hierarchy's levels side by side."""
from __future__ import annotations

import colorsys
import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from jhseg.metrics import level_recovery
from jhseg.viz import _canvas

_GOLDEN = 0.618033988749895  # hue step that keeps successive colours far apart


def label_palette(num: int) -> np.ndarray:
  """`num` distinct, well separated RGB colours in [0, 1] (golden-ratio hues)."""
  colours = [colorsys.hsv_to_rgb((k * _GOLDEN) % 1.0, 0.65 + 0.35 * (k % 2),
                                 0.95 - 0.25 * ((k // 2) % 2)) for k in range(num)]
  return np.array(colours, np.float64).reshape(num, 3)


def colour_segments(labels, *, image=None) -> np.ndarray:
  """(H, W, 3) float RGB: each segment in its mean image colour, or a palette colour.

  Args:
    labels: (H, W) integer label map.
    image: optional (H, W, 3) float image in [0, 1]; when given, each segment
      takes its mean colour (the usual way to show a hierarchy's level),
      otherwise distinct palette colours in the order of the sorted label ids.
  """
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"colour_segments: labels must be (H, W), got shape {labels.shape}")
  ids, index = np.unique(labels, return_inverse=True)
  index = index.reshape(labels.shape)
  if image is None:
    return label_palette(len(ids))[index]
  image = np.asarray(image, np.float64)
  if image.shape != labels.shape + (3,):
    raise ValueError(f"colour_segments: image must be {labels.shape + (3,)}, "
                     f"got {image.shape}")
  sums = np.zeros((len(ids), 3))
  np.add.at(sums, index.ravel(), image.reshape(-1, 3))
  counts = np.bincount(index.ravel(), minlength=len(ids))[:, None]
  return (sums / counts)[index]


def draw_contours(rgb, contour_h, contour_v, *,
                  colour: Sequence[float] = (1.0, 0.0, 0.0)) -> np.ndarray:
  """Copy of the (H, W, 3) `rgb` with the pixels beside each contour edge coloured.

  A contour edge lies between two pixels; the pixel to its right (h) or below
  it (v) is painted, so a region's contour is a one-pixel line.
  """
  out = np.array(rgb, np.float64, copy=True)
  contour_h = np.asarray(contour_h, bool)
  contour_v = np.asarray(contour_v, bool)
  mark = np.zeros(out.shape[:2], bool)
  mark[:, 1:] |= contour_h
  mark[1:, :] |= contour_v
  out[mark] = colour
  return out


def hierarchy_levels_figure(image, h, v, thresholds: Sequence[float], *,
                            titles: Sequence[str] | None = None,
                            panel_size: float = 3.0) -> Figure:
  """One panel per threshold: the cut's segments in mean colour, contours in red.

  The cut at t has the edges with weight > t as contours (as
  `jhseg.hierarchy.cut_at_threshold`).
  """
  image = np.asarray(image, np.float64)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"hierarchy_levels_figure: image must be (H, W, 3), got {image.shape}")
  h, v = np.asarray(h), np.asarray(v)
  if h.shape != (image.shape[0], image.shape[1] - 1) or v.shape != (image.shape[0] - 1,
                                                                     image.shape[1]):
    raise ValueError(f"hierarchy_levels_figure: h {h.shape} and v {v.shape} are not the "
                     f"edges of a {image.shape[0]}x{image.shape[1]} image")
  if not thresholds:
    raise ValueError("hierarchy_levels_figure: needs at least one threshold")
  titles = list(titles) if titles is not None else [f"t = {t:g}" for t in thresholds]
  aspect = image.shape[0] / image.shape[1]
  figure = _canvas.new_figure(width=panel_size * (len(thresholds) + 1),
                              height=panel_size * aspect + 0.5)
  axes = figure.subplots(1, len(thresholds) + 1, squeeze=False)[0]
  axes[0].imshow(np.clip(image, 0, 1))
  axes[0].set_title("image")
  for ax, threshold, title in zip(axes[1:], thresholds, titles):
    contour_h, contour_v = h > threshold, v > threshold
    labels = level_recovery.contour_regions(contour_h, contour_v)
    ax.imshow(np.clip(draw_contours(colour_segments(labels, image=image),
                                    contour_h, contour_v), 0, 1))
    ax.set_title(f"{title} ({labels.max()} regions)")
  for ax in axes:
    ax.set_axis_off()
  figure.tight_layout()
  return figure


def save_hierarchy_levels_png(path: str | os.PathLike, image, h, v,
                              thresholds: Sequence[float], **kwargs) -> str:
  """Writes `hierarchy_levels_figure(...)` as a PNG; returns the path."""
  return _canvas.save_png(hierarchy_levels_figure(image, h, v, thresholds, **kwargs), path)
