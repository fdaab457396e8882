"""HSG decoder attention maps painted on the pixels (Ke et al., CVPR 2022, Fig. 1/5 style).

A clustering transformer of level l attends with its k_l learned queries over the
n_{l-1} segments of the level below (`LevelOutput.attention`, (k_l, n_{l-1})). To show
it on the image, every pixel takes the attention of the segment it belongs to:

  map_q(p) = A[q, S(p)]

where S is the pixel map of the level's *input* segments: G0 for level 1, G1 for
level 2 (the level-1 clusters are exactly the tokens level 2 attends over), and so on.
Pixels outside the valid area (label < 0) are 0.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from jhseg.viz import _canvas


def paint_attention(segment_map, attention) -> np.ndarray:
  """(k, H, W) float maps: out[q, i, j] = attention[q, segment_map[i, j]], 0 where < 0.

  Args:
    segment_map: (H, W) integer ids of the segments the queries attend over.
    attention: (k, n) attention of k queries over n segments.
  """
  segment_map = np.asarray(segment_map)
  attention = np.asarray(attention, np.float64)
  if segment_map.ndim != 2 or not np.issubdtype(segment_map.dtype, np.integer):
    raise ValueError(f"paint_attention: segment_map must be an (H, W) integer map, got "
                     f"shape {segment_map.shape} dtype {segment_map.dtype}")
  if attention.ndim != 2:
    raise ValueError(f"paint_attention: attention must be (queries, segments), got shape "
                     f"{attention.shape}")
  if segment_map.size and segment_map.max() >= attention.shape[1]:
    raise ValueError(f"paint_attention: segment_map has id {segment_map.max()} but "
                     f"attention covers only {attention.shape[1]} segments")
  valid = segment_map >= 0
  maps = attention[:, np.where(valid, segment_map, 0)]
  return np.where(valid[None], maps, 0.0)


def attention_figure(segment_maps: Sequence, attentions: Sequence, *, image=None,
                     titles: Sequence[str] | None = None,
                     panel_size: float = 1.6) -> Figure:
  """Rows = levels, columns = queries: each query's attention painted on the pixels.

  Args:
    segment_maps: per level, the (H, W) pixel map of that level's input segments
      (G0, G1, ...); see `paint_attention`.
    attentions: per level, the (k_l, n_l) attention of its queries.
    image: optional (H, W, 3) float image in [0, 1], shown in a first column.
    titles: per level, a row name (default "level 1", "level 2", ...).
  Colours are shared within a row (0 to the row's largest value), so the queries of
  one level compare directly; the row maximum is given in the row name.
  """
  if len(segment_maps) != len(attentions) or not len(attentions):
    raise ValueError(f"attention_figure: needs one segment map per attention (at least "
                     f"one); got {len(segment_maps)} maps and {len(attentions)} attentions")
  titles = list(titles) if titles is not None else [
      f"level {l}" for l in range(1, len(attentions) + 1)]
  if len(titles) != len(attentions):
    raise ValueError(f"attention_figure: {len(titles)} titles for {len(attentions)} levels")
  rows = [paint_attention(s, a) for s, a in zip(segment_maps, attentions)]
  shape = rows[0].shape[1:]
  for level, maps in enumerate(rows):
    if maps.shape[1:] != shape:
      raise ValueError(f"attention_figure: segment_maps[{level}] is {maps.shape[1:]}, "
                       f"segment_maps[0] is {shape}")
  offset = 0 if image is None else 1
  if image is not None:
    image = np.asarray(image, np.float64)
    if image.shape != shape + (3,):
      raise ValueError(f"attention_figure: image must be {shape + (3,)}, got {image.shape}")
  columns = offset + max(len(maps) for maps in rows)
  aspect = shape[0] / max(shape[1], 1)
  figure = _canvas.new_figure(width=panel_size * columns,
                              height=(panel_size * aspect + 0.3) * len(rows))
  axes = figure.subplots(len(rows), columns, squeeze=False)
  for row, (maps, title) in enumerate(zip(rows, titles)):
    vmax = float(maps.max()) if maps.size and maps.max() > 0 else 1.0
    if image is not None:
      axes[row, 0].imshow(np.clip(image, 0, 1))
      axes[row, 0].set_title(f"{title} (max {vmax:.2f})", fontsize=7)
    for q, panel in enumerate(maps):
      ax = axes[row, offset + q]
      ax.imshow(panel, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
      ax.set_title(f"q{q}" if image is not None or q else f"{title} (max {vmax:.2f}) q0",
                   fontsize=7)
  for ax in axes.ravel():
    ax.set_axis_off()
  figure.tight_layout()
  return figure


def save_attention_png(path: str | os.PathLike, segment_maps: Sequence,
                       attentions: Sequence, **kwargs) -> str:
  """Writes `attention_figure(...)` as a PNG; returns the path."""
  path = _canvas.prepare_png_path(path, caller="save_attention_png")
  return _canvas.save_png(attention_figure(segment_maps, attentions, **kwargs), path)
