"""Precision-recall curves of the BSDS boundary benchmark, with iso-F contours (PNG).

Like the other `jhseg.viz` modules, figures live on their own Agg canvas (no
pyplot state), so they can be drawn from workers and headless machines.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from jhseg.viz import _canvas

ISO_F_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def pr_curve_figure(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    ods_points: Mapping[str, tuple[float, float]] | None = None,
    iso_f: Sequence[float] = ISO_F_LEVELS,
    title: str = "BSDS boundary benchmark",
) -> Figure:
  """PR curves over grey iso-F contours F = 2PR / (P + R).

  Args:
    curves: name -> (recall, precision), one point per threshold.
    ods_points: name -> (recall, precision) at the optimal dataset scale,
      drawn as dots; the legend quotes their F.
    iso_f: F levels of the contours.
    title: axes title.
  """
  figure = _canvas.new_figure(width=5.5, height=5.5, dpi=120)
  ax = figure.add_subplot(1, 1, 1)
  grid = np.linspace(0.005, 1, 200)
  r, p = np.meshgrid(grid, grid)
  contours = ax.contour(r, p, 2 * p * r / (p + r), levels=list(iso_f), colors="0.75", linewidths=0.8)
  ax.clabel(contours, fmt="F=%.1f", fontsize=7)
  for name, (recall, precision) in curves.items():
    label = name
    point = (ods_points or {}).get(name)
    if point is not None:
      ods_r, ods_p = point
      label = f"{name} [ODS F={2 * ods_p * ods_r / max(ods_p + ods_r, 1e-12):.3f}]"
    (line,) = ax.plot(recall, precision, lw=1.8, label=label)
    if point is not None:
      ax.plot([point[0]], [point[1]], "o", color=line.get_color())
  ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="Recall", ylabel="Precision", title=title, aspect="equal")
  ax.grid(alpha=0.3)
  ax.legend(loc="lower left", fontsize=8)
  figure.tight_layout()
  return figure


def save_pr_curve_png(path: str | os.PathLike, curves, **kwargs) -> str:
  """Draws `pr_curve_figure(curves, **kwargs)` into the PNG file `path`; returns the path."""
  return _canvas.save_png(pr_curve_figure(curves, **kwargs), path)
