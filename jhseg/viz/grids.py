"""Rows of image / target UCM / predicted UCM, the ultrametric paper's qualitative figure."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from jhseg.viz import _canvas
from jhseg.viz import ucm

COLUMN_TITLES = ("image", "target UCM", "predicted UCM")


def ucm_grid_figure(images: Sequence, targets: Sequence, predictions: Sequence, *,
                    panel_size: float = 3.0, vmax: float | None = 1.0) -> Figure:
  """One row per image: the image, its target UCM and the predicted UCM.

  Args:
    images: (H, W, 3) float images in [0, 1].
    targets: per image, the target edge weights (h, v).
    predictions: per image, the predicted edge weights (h, v).
    vmax: weight drawn black (None: each UCM's own maximum). UCMs are shown at
      image resolution (BSDS convention) so they align with the image.
  """
  if not len(images) == len(targets) == len(predictions) or not len(images):
    raise ValueError(f"ucm_grid_figure: needs as many images, targets and predictions "
                     f"(at least one); got {len(images)}, {len(targets)}, {len(predictions)}")
  first = np.asarray(images[0])
  aspect = first.shape[0] / first.shape[1]
  figure = _canvas.new_figure(width=panel_size * 3, height=panel_size * aspect * len(images)
                              + 0.4)
  axes = figure.subplots(len(images), 3, squeeze=False)
  for row, (image, target, prediction) in enumerate(zip(images, targets, predictions)):
    image = np.asarray(image, np.float64)
    if image.ndim != 3 or image.shape[-1] != 3:
      raise ValueError(f"ucm_grid_figure: images[{row}] must be (H, W, 3), got {image.shape}")
    panels = [np.clip(image, 0, 1)]
    for name, (h, v) in (("targets", target), ("predictions", prediction)):
      if np.shape(h) != (image.shape[0], image.shape[1] - 1):
        raise ValueError(f"ucm_grid_figure: {name}[{row}] h has shape {np.shape(h)}, "
                         f"expected {(image.shape[0], image.shape[1] - 1)}")
      panels.append(ucm.ucm_to_rgb(ucm.ucm_image(h, v, resolution="image"), vmax=vmax))
    for column, panel in enumerate(panels):
      axes[row, column].imshow(panel, interpolation="nearest")
      axes[row, column].set_axis_off()
      if row == 0:
        axes[row, column].set_title(COLUMN_TITLES[column])
  figure.tight_layout()
  return figure


def save_ucm_grid_png(path: str | os.PathLike, images: Sequence, targets: Sequence,
                      predictions: Sequence, **kwargs) -> str:
  """Writes `ucm_grid_figure(...)` as a PNG; returns the path."""
  return _canvas.save_png(ucm_grid_figure(images, targets, predictions, **kwargs), path)
